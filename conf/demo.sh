#!/usr/bin/env bash
# Starts a small local topology: three memcached servers on free loopback
# ports and Strata in front of them (conf/demo.yml as the template), in the
# foreground. Ctrl-C stops Strata and the memcached servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."

py=/usr/bin/python3
[ -x "$py" ] || py=python3
free_port() {
    "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

run=$(mktemp -d /tmp/strata-demo.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT INT TERM

user_flag=()
[ "$(id -u)" = 0 ] && user_flag=(-u root)
mc_ports=()
for i in 1 2 3; do
    port=$(free_port)
    memcached "${user_flag[@]}" -l 127.0.0.1 -p "$port" -U 0 -m 64 &
    pids+=($!)
    mc_ports+=("$port")
done
listen=$(free_port)
stats=$(free_port)
sed -e "s/@LISTEN@/$listen/" -e "s/@MC1@/${mc_ports[0]}/" \
    -e "s/@MC2@/${mc_ports[1]}/" -e "s/@MC3@/${mc_ports[2]}/" \
    conf/demo.yml > "$run/demo.yml"

./src/strata -t -c "$run/demo.yml"
./src/strata -c "$run/demo.yml" -s "$stats" -a 127.0.0.1 -v 5 &
pids+=($!)
strata_pid=$!
sleep 0.5
cat <<MSG

Strata is serving pool 'demo' on 127.0.0.1:$listen in front of memcached on
ports ${mc_ports[*]} (config: $run/demo.yml).
  talk to it:   $py -c 'import socket; s=socket.create_connection(("127.0.0.1",$listen)); s.sendall(b"set hello 0 0 5\r\nworld\r\nget hello\r\n"); import time; time.sleep(0.2); print(s.recv(999).decode())'
  or:           telnet 127.0.0.1 $listen
  stats (JSON): $py -c 'import socket; print(socket.create_connection(("127.0.0.1",$stats)).recv(65536).decode())'
  reload:       cp $run/demo.yml $run/demo.yml.new; edit $run/demo.yml.new;
                mv $run/demo.yml.new $run/demo.yml; kill -USR1 $strata_pid
                (the rename makes the file change at once, never half written;
                no client is dropped)
Press Ctrl-C to stop.
MSG
wait "${pids[-1]}"
