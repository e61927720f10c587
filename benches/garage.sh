# garage.sh: sourced by the benchmark scripts. `start_garage DIR` starts a one-node Garage on
# loopback with its data under DIR, creates the bucket `bench` and a key for it, and sets:
#   GPID (the server's pid: the caller kills it), ENDPOINT (http://127.0.0.1:PORT), and exports
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION for puce and restic.
# shellcheck shell=bash

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_garage() {
  local dir=$1 rpc s3 adm key
  rpc=$(free_port); s3=$(free_port); adm=$(free_port)
  mkdir -p "$dir"
  cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$adm"
admin_token = "bench"
EOF
  RUST_LOG=warn garage -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
  GPID=$!
  local g=(garage -c "$dir/garage.toml")
  for _ in $(seq 100); do "${g[@]}" status >/dev/null 2>&1 && break; sleep 0.2; done
  "${g[@]}" layout assign -z dc1 -c 10G "$("${g[@]}" node id -q | cut -d@ -f1)" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  for _ in $(seq 50); do "${g[@]}" bucket create bench >/dev/null 2>&1 && break; sleep 0.3; done
  key=$("${g[@]}" key create bench-key)
  AWS_ACCESS_KEY_ID=$(echo "$key" | awk -F': *' '/Key ID/ {print $2}')
  AWS_SECRET_ACCESS_KEY=$(echo "$key" | awk -F': *' '/Secret key/ {print $2}')
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=garage
  "${g[@]}" bucket allow --read --write --owner bench --key bench-key >/dev/null
  ENDPOINT=http://127.0.0.1:$s3
}
