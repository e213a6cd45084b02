//! Helm charts: a chart's own `Chart.yaml` read from its packaged `.tgz`, the OCI form of
//! a chart (Helm's config and layer media types), and the repository index
//! (`index.yaml`, [`repo`]).

pub mod repo;

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// Helm's OCI config media type (the chart's metadata as JSON).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
/// Helm's OCI layer media type (the packaged chart, byte-identical).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Upper bound on a `Chart.yaml`.
const MAX_CHART_YAML: u64 = 1 << 20;
/// How much of a packaged chart is decompressed while looking for its `Chart.yaml`
/// (`helm package` writes it first; a gzip bomb stops here).
const MAX_SCAN_BYTES: u64 = 256 << 20;

/// YAML from outside (an upstream `index.yaml`, a chart's `Chart.yaml`, the `index.yaml`
/// already in a web root) as `T`, refused when its aliases expand it beyond twice its own
/// size: a few KB of anchors and aliases (`*a` repeated, each naming a long list) would
/// otherwise cost gigabytes. Genuine Helm files have no aliases; a document without them
/// has fewer nodes than bytes. The nodes are counted first, without building anything.
pub fn from_yaml<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let budget = std::cell::Cell::new(2 * bytes.len() as u64 + 1024);
    serde::de::DeserializeSeed::deserialize(
        CountNodes(&budget),
        serde_yaml_ng::Deserializer::from_slice(bytes),
    )
    .map_err(|e| e.to_string())?;
    serde_yaml_ng::from_slice(bytes).map_err(|e| e.to_string())
}

/// Counts the nodes of a YAML document (aliases expanded), failing once `budget` is spent.
struct CountNodes<'b>(&'b std::cell::Cell<u64>);

impl CountNodes<'_> {
    fn tick<E: serde::de::Error>(&self) -> std::result::Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "its aliases expand it to more than twice its size (a YAML alias bomb?)",
            )),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for CountNodes<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CountNodes<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML document")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        self.tick()?;
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(CountNodes(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(CountNodes(self.0))?.is_some() {
            map.next_value_seed(CountNodes(self.0))?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(
        self,
        data: A,
    ) -> std::result::Result<(), A::Error> {
        // A tagged node (`!tag value`).
        self.tick()?;
        let ((), variant) = data.variant_seed(CountNodes(self.0))?;
        serde::de::VariantAccess::newtype_variant_seed(variant, CountNodes(self.0))
    }
}

/// A chart's metadata as its `Chart.yaml` states it; the fields Helm copies into a
/// repository index and into an OCI config. Field order is Helm's (`chart.Metadata`), so
/// the config JSON matches what `helm push` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintainers: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar_string"
    )]
    pub app_version: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<serde_json::Value>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub chart_type: Option<String>,
}

/// `appVersion: 1.16` is a number to YAML; Helm reads it as the string it wrote.
fn scalar_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    let v = Option::<serde_yaml_ng::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_yaml_ng::Value::Null) => None,
        Some(serde_yaml_ng::Value::String(s)) => Some(s),
        Some(serde_yaml_ng::Value::Number(n)) => Some(n.to_string()),
        Some(serde_yaml_ng::Value::Bool(b)) => Some(b.to_string()),
        Some(_) => return Err(serde::de::Error::custom("appVersion must be a scalar")),
    })
}

impl ChartMetadata {
    /// `<name>-<version>.tgz`, the file name `helm package` gives it.
    pub fn file_name(&self) -> String {
        format!("{}-{}.tgz", self.name, self.version)
    }

    /// The OCI tag Helm pushes the chart under (`+` is not allowed in a tag).
    pub fn oci_tag(&self) -> String {
        self.version.replace('+', "_")
    }

    /// The OCI config blob: the metadata as JSON, as `helm push` writes it.
    pub fn oci_config(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("chart metadata serialises")
    }
}

/// Reads the `Chart.yaml` of a packaged chart (`<dir>/Chart.yaml` at the top of the
/// archive). `what` names the chart in errors.
pub fn read_chart_metadata(tgz: &Path, what: &str) -> Result<ChartMetadata> {
    let file = std::fs::File::open(tgz).map_err(|e| Error::io("cannot read", tgz, e))?;
    metadata_from_reader(file, what)
}

/// As [`read_chart_metadata`], from any reader of the `.tgz` bytes.
pub fn metadata_from_reader(reader: impl Read, what: &str) -> Result<ChartMetadata> {
    let bad = |why: String| {
        Error::Verify(format!("{what}: not a packaged Helm chart: {why}"))
            .with_hint("a chart is a .tgz made by `helm package` (<name>/Chart.yaml inside)")
    };
    let gz = flate2::read::GzDecoder::new(reader).take(MAX_SCAN_BYTES);
    let mut archive = tar::Archive::new(gz);
    let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() != 2 || parts[1].as_os_str() != "Chart.yaml" {
            continue;
        }
        if entry.size() > MAX_CHART_YAML {
            return Err(bad(format!(
                "{} is {} bytes, over {MAX_CHART_YAML}",
                path.display(),
                entry.size()
            )));
        }
        let mut text = String::new();
        (&mut entry)
            .take(MAX_CHART_YAML)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let meta: ChartMetadata =
            from_yaml(text.as_bytes()).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        for (field, value) in [("name", &meta.name), ("version", &meta.version)] {
            if !is_safe_component(value) {
                return Err(bad(format!(
                    "{}: {field} `{}` is empty or not made of letters, digits and `._+-`",
                    path.display(),
                    value.escape_debug()
                )));
            }
        }
        return Ok(meta);
    }
    Err(bad(
        "no <name>/Chart.yaml in the archive (or beyond the first 256 MiB)".into(),
    ))
}

/// A chart name or version fit for a file name (`<name>-<version>.tgz`): letters, digits
/// and `._+-`, not starting with a dot.
fn is_safe_component(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// The OCI form of a chart: config and manifest bytes (the layer is the `.tgz` itself).
pub struct OciChart {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// Builds the OCI manifest `helm push` would write for a packaged chart, deterministically
/// (`created` is the bundle's time, not the clock's).
pub fn oci_chart(
    meta: &ChartMetadata,
    layer: Sha256Digest,
    layer_size: u64,
    created: &str,
) -> OciChart {
    let config = meta.oci_config();
    let mut annotations = serde_json::Map::new();
    annotations.insert("org.opencontainers.image.created".into(), created.into());
    if let Some(d) = &meta.description {
        annotations.insert(
            "org.opencontainers.image.description".into(),
            d.clone().into(),
        );
    }
    annotations.insert(
        "org.opencontainers.image.title".into(),
        meta.name.clone().into(),
    );
    annotations.insert(
        "org.opencontainers.image.version".into(),
        meta.version.clone().into(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": crate::registry::OCI_MANIFEST,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{}", Sha256Digest::of_bytes(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": format!("sha256:{layer}"),
            "size": layer_size,
        }],
        "annotations": annotations,
    });
    OciChart {
        config,
        manifest: serde_json::to_vec(&manifest).expect("manifest serialises"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn reads_chart_yaml() {
        let bytes = tgz(&[
            ("demo/values.yaml", b"a: 1\n"),
            (
                "demo/Chart.yaml",
                b"apiVersion: v2\nname: demo\nversion: 1.2.5\nappVersion: 1.16\ndescription: A demo\ntype: application\nextra: ignored\n",
            ),
            ("demo/charts/sub/Chart.yaml", b"name: sub\nversion: 0.1.0\n"),
        ]);
        let meta = metadata_from_reader(bytes.as_slice(), "demo").unwrap();
        assert_eq!(meta.name, "demo");
        assert_eq!(meta.version, "1.2.5");
        assert_eq!(meta.app_version.as_deref(), Some("1.16"));
        assert_eq!(meta.chart_type.as_deref(), Some("application"));
        assert_eq!(meta.file_name(), "demo-1.2.5.tgz");
        let config = String::from_utf8(meta.oci_config()).unwrap();
        assert!(
            config.starts_with(r#"{"name":"demo","version":"1.2.5""#),
            "{config}"
        );
    }

    #[test]
    fn yaml_aliases_may_not_expand_a_document_beyond_twice_its_size() {
        let n = 2_000;
        let bomb = format!("a: &a [{}]\nb: [{}]\n", "x,".repeat(n), "*a,".repeat(n));
        let e = from_yaml::<serde_yaml_ng::Value>(bomb.as_bytes()).unwrap_err();
        assert!(e.contains("alias"), "{e}");
        // A few aliases of small nodes are still read.
        let fine: serde_yaml_ng::Value =
            from_yaml(b"a: &a [1, 2]\nb: *a\nc: !tag {d: *a}\n").unwrap();
        assert_eq!(fine["b"], fine["a"]);
    }

    #[test]
    fn refuses_what_is_not_a_chart() {
        let none = tgz(&[("demo/values.yaml", b"a: 1\n")]);
        let e = metadata_from_reader(none.as_slice(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no <name>/Chart.yaml"), "{e}");
        let e = metadata_from_reader(&b"not gzip"[..], "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a packaged Helm chart"), "{e}");
    }
}
