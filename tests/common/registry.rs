//! A real `docker-registry` (CNCF distribution 2.8) on a free 127.0.0.1 port, optionally
//! with htpasswd basic auth, and small real images built offline with `umoci` and pushed
//! with `skopeo`. Stopped (by pid) when dropped.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{free_port, port_accepts, require_tool, sha256_bytes};

pub struct Registry {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a registry storing under `dir`; with `login`, it requires that basic login.
    pub fn start(dir: &Path, login: Option<(&str, &str)>) -> Registry {
        require_tool("docker-registry");
        fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            dir.join("data").display()
        );
        if let Some((user, password)) = login {
            require_tool("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let htpasswd = dir.join("htpasswd");
            fs::write(&htpasswd, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: test-registry, path: {}}}}}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            port,
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_accepts(port) {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on port {port}:\n{}",
                registry.log()
            );
            sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Pushes the image `oci:LAYOUT:TAG` to `HOST/REPO:TAG` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, creds: Option<&str>) {
        let mut args = vec![
            "copy".to_string(),
            "--quiet".to_string(),
            "--dest-tls-verify=false".to_string(),
        ];
        if let Some(c) = creds {
            args.push(format!("--dest-creds={c}"));
        }
        args.push(format!("oci:{}:{tag}", layout.display()));
        args.push(format!("docker://{}/{repo}:{tag}", self.host()));
        run_ok("skopeo", &args);
    }

    /// The sha256 of the manifest bytes the registry serves for `repo:reference`.
    pub fn manifest_digest(&self, repo: &str, reference: &str, creds: Option<&str>) -> String {
        let mut args = vec![
            "inspect".to_string(),
            "--raw".to_string(),
            "--tls-verify=false".to_string(),
        ];
        if let Some(c) = creds {
            args.push(format!("--creds={c}"));
        }
        args.push(format!("docker://{}/{repo}:{reference}", self.host()));
        sha256_bytes(run_ok("skopeo", &args))
    }

    /// PUTs raw manifest bytes (an index, say) under `repo:tag`.
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) {
        let file = self.dir.join("put-manifest.json");
        fs::write(&file, bytes).unwrap();
        run_ok(
            "curl",
            &[
                "-fsS".to_string(),
                "-X".to_string(),
                "PUT".to_string(),
                "-H".to_string(),
                format!("Content-Type: {media_type}"),
                "--data-binary".to_string(),
                format!("@{}", file.display()),
                format!("http://{}/v2/{repo}/manifests/{tag}", self.host()),
            ],
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_ok(program: &str, args: &[String]) -> Vec<u8> {
    require_tool(program);
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds a small real image `oci:LAYOUT:TAG` offline with umoci: an empty base plus one
/// file whose content is `content`.
pub fn build_image(layout: &Path, tag: &str, content: &str) {
    require_tool("umoci");
    let layout_s = layout.display().to_string();
    if !layout.join("oci-layout").exists() {
        run_ok(
            "umoci",
            &["init".into(), "--layout".into(), layout_s.clone()],
        );
    }
    let image = format!("{layout_s}:{tag}");
    run_ok("umoci", &["new".into(), "--image".into(), image.clone()]);
    let bundle = layout.with_extension(format!("unpack-{tag}"));
    let _ = fs::remove_dir_all(&bundle);
    run_ok(
        "umoci",
        &[
            "unpack".into(),
            "--rootless".into(),
            "--image".into(),
            image.clone(),
            bundle.display().to_string(),
        ],
    );
    fs::write(bundle.join("rootfs/hello"), content).unwrap();
    run_ok(
        "umoci",
        &[
            "repack".into(),
            "--image".into(),
            image,
            bundle.display().to_string(),
        ],
    );
    let _ = fs::remove_dir_all(&bundle);
}
