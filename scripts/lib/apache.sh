# Shared by demo.sh and bench.sh: run a private apache2 on a free 127.0.0.1 port serving a
# directory, without touching the system service. Stopped by pid with stop_apache.
#   start_apache DOCROOT WORKDIR   -> sets APACHE_PORT and APACHE_PID
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_apache() {
    local docroot=$1 work=$2
    mkdir -p "$work"
    chmod 755 "$work" "$docroot"
    APACHE_PORT=$(free_port)
    local user_lines=""
    if [[ $(id -u) -eq 0 ]]; then user_lines=$'User nobody\nGroup nogroup'; fi
    cat >"$work/httpd.conf" <<CONF
ServerRoot /etc/apache2
ServerName 127.0.0.1
Listen 127.0.0.1:$APACHE_PORT
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule autoindex_module /usr/lib/apache2/modules/mod_autoindex.so
TypesConfig /etc/mime.types
$user_lines
PidFile $work/httpd.pid
ErrorLog $work/error.log
DefaultRuntimeDir $work
EnableSendfile Off
DocumentRoot $docroot
<Directory />
  Require all granted
  Options +Indexes
</Directory>
CONF
    APACHE_RUN_DIR=$work APACHE_LOCK_DIR=$work APACHE_LOG_DIR=$work \
        setsid /usr/sbin/apache2 -f "$work/httpd.conf" -DFOREGROUND >"$work/stdout.log" 2>&1 &
    APACHE_PID=$!
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$APACHE_PORT/')" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "apache did not start: $(cat "$work/error.log" "$work/stdout.log" 2>/dev/null)" >&2
    return 1
}

stop_apache() {
    if [[ -n ${APACHE_PID:-} ]]; then
        kill -TERM "$APACHE_PID" 2>/dev/null || true
        wait "$APACHE_PID" 2>/dev/null || true
        APACHE_PID=
    fi
}
