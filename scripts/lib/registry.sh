# Used by bench.sh: private docker-registry (CNCF distribution) instances on free 127.0.0.1
# ports, plain HTTP, storage under a work directory; no system service is touched. Each is
# stopped by its pid (stop_registry / stop_registries). Needs free_port from apache.sh.
#   start_registry NAME WORKDIR [PORT]  -> REG_PORT[NAME], REG_PID[NAME]; empty storage
#   restart_registry NAME               -> stops it, wipes its storage, starts it again on
#                                          the same port (a fresh, empty registry)
#   stop_registry NAME / stop_registries
declare -gA REG_PORT=() REG_PID=() REG_WORK=()

start_registry() {
    local name=$1 work=$2 port=${3:-}
    [[ -n $port ]] || port=$(free_port)
    rm -rf "$work/storage"
    mkdir -p "$work/storage"
    cat >"$work/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
    setsid docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
    REG_PID[$name]=$!
    REG_PORT[$name]=$port
    REG_WORK[$name]=$work
    local _
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "${REG_PID[$name]}" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "docker-registry '$name' did not start on 127.0.0.1:$port: $(cat "$work/registry.log" 2>/dev/null)" >&2
    return 1
}

stop_registry() {
    local name=$1 pid=${REG_PID[$1]:-}
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        REG_PID[$name]=
    fi
}

restart_registry() {
    local name=$1
    stop_registry "$name"
    start_registry "$name" "${REG_WORK[$name]}" "${REG_PORT[$name]}"
}

stop_registries() {
    local name
    for name in "${!REG_PID[@]}"; do stop_registry "$name"; done
}
