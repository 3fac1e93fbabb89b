#!/usr/bin/env bash
# A real, private Slurm cluster on this one machine, for the tests (needs root).
#
#   tests/slurm/cluster.sh install   apt-get the Debian packages (quick no-op when present)
#   tests/slurm/cluster.sh start     munged, MariaDB, slurmdbd, slurmctld, 4 slurmd (node1..node4) with 4 CPUs
#                                    each in partition `debug`; waits until all nodes are up (idle);
#                                    "already running" (exit 0) if it is
#   tests/slurm/cluster.sh stop [--purge]  cancels jobs, stops everything start made, removes namespaces,
#                                    bridge, /etc/hosts block and the /etc/slurm/slurm.conf link
#   tests/slurm/cluster.sh status    what runs
#   tests/slurm/cluster.sh logs [N]  last N lines of every daemon log
#
# Each node runs in its own network namespace with its own hostname (veth pairs into a private bridge,
# private addresses, no default route), so a 2-node job really talks over a network between two hosts.
# Where namespaces cannot be made, the nodes are several slurmd on 127.0.0.1 with distinct ports.
# TEXTGAN_SLURM_MODE=auto|netns|localhost forces a mode. Nothing listens for, or sends to, any address
# outside this machine: MariaDB binds 127.0.0.1, the nodes live on $SUBNET.0/24 inside the bridge.
#
# Everything lives under $STATE (default /tmp/textgan-slurm, or $TEXTGAN_SLURM_STATE):
#   etc/slurm.conf, etc/slurmdbd.conf   use with: export SLURM_CONF=$STATE/etc/slurm.conf
#   log/                                slurmctld.log slurmdbd.log slurmd-nodeN.log munged.log mariadb.log
#   mode                                "netns" or "localhost" while the cluster is up
# The accounting database survives stop/start (job ids keep increasing, so sacct never sees two jobs
# with one id); the controller's job queue does not. `cluster.sh stop --purge` deletes all state.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, often not on a user's PATH

STATE=${TEXTGAN_SLURM_STATE:-/tmp/textgan-slurm}
MODE_WANTED=${TEXTGAN_SLURM_MODE:-auto}
SUBNET=${TEXTGAN_SLURM_SUBNET:-10.250.77}   # first three octets of a private /24 used only inside the bridge
START_TIMEOUT=${TEXTGAN_SLURM_START_TIMEOUT:-90}
CLUSTER=textgan
PARTITION=debug
NODES=(node1 node2 node3 node4)
CPUS_PER_NODE=4            # declared (config_overrides): 2 tasks x 2 cpus per node
MEM_PER_NODE_MB=16384      # declared, not enforced (CR_CPU): lets jobs ask for --mem up to 16G
CTLD_PORT=16817 SLURMD_PORT=16818 DBD_PORT=16819 DB_PORT=16306
BRIDGE=tgslurm0
NETNS_PREFIX=textgan-
HOSTS_BEGIN="# BEGIN textgan-slurm test cluster (tests/slurm/cluster.sh; removed by its stop)"
HOSTS_END="# END textgan-slurm test cluster"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server iproute2 util-linux procps)
COMMANDS=(munged mungekey munge unmunge timeout slurmctld slurmd slurmdbd sinfo sacct sacctmgr scontrol mariadbd mariadb
          mariadb-install-db ip ss nsenter unshare setsid flock ps)
# Every daemon gets this variable: stop finds leftovers (and their children, e.g. slurmstepd and job
# tasks) by it even when a pid file is gone. Only daemons carry it, never this script or the caller.
MARKER="TEXTGAN_SLURM_DAEMON=$STATE"

CONF="$STATE/etc/slurm.conf"
MUNGE_SOCKET=/run/munge/munge.socket.2
export SLURM_CONF="$CONF"

say() { echo "cluster.sh: $*"; }
die() { echo "cluster.sh: error: $*" >&2; exit 1; }

missing_commands() {
  local c; for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null 2>&1 || echo "$c"; done
}

cmd_install() {
  [ "$(id -u)" = 0 ] || die "install needs root (apt-get)"
  if [ -z "$(missing_commands)" ]; then say "packages already installed"; return; fi
  export DEBIAN_FRONTEND=noninteractive
  # Try the cached package lists first; refresh them only if that fails (saves ~10 s).
  if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
  fi
  local left; left=$(missing_commands)
  [ -z "$left" ] || die "still missing after apt-get: $left"
  say "installed: ${PACKAGES[*]}"
}

# ------------------------------------------------------------------ processes

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pidfile_pid() { [ -s "$1" ] && tr -dc 0-9 <"$1" || true; }

# Slurm daemons fork into the background and then write only to their LogFile; what they print before
# (a config error) lands in the same file through this redirection.
# Start a daemon detached from our stdin/stdout (a caller that captures our output, such as pytest,
# must not wait for daemons holding its pipe), with the marker in its environment.
spawn() {
  local log=$1; shift
  env "$MARKER" SLURM_CONF="$CONF" setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
}

marked_pids() {  # processes carrying our marker
  grep -lzx -- "$MARKER" /proc/[0-9]*/environ 2>/dev/null | sed 's|^/proc/||; s|/environ$||' || true
}

with_descendants() {  # the given pids and all their descendants
  ps -eo pid=,ppid= | awk -v roots="$*" '
    { parent[$1] = $2 } END {
      n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1
      do { changed = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } } while (changed)
      for (p in keep) if (p in parent) print p }'
}

our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NETNS_PREFIX" || true; }

job_pids() {  # every slurmstepd of our nodes (found by the marker or the namespace) and its job tasks
  local p ns stepds=""
  for p in $(marked_pids; for ns in $(our_netns); do ip netns pids "$ns" 2>/dev/null; done); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = slurmstepd ] && stepds+=" $p"
  done
  [ -z "$stepds" ] || with_descendants $stepds
}

# TERM, wait up to $2 seconds, then KILL.
terminate() {
  local pids=$1 secs=$2 p i
  [ -n "${pids// }" ] || return 0
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    local alive=""; for p in $pids; do pid_alive "$p" && alive+=" $p"; done
    [ -z "$alive" ] && return 0
    sleep 0.1
  done
  kill -KILL $pids 2>/dev/null || true
}

# ------------------------------------------------------------------ network and names

# Ask the controller only where its address is on this machine: in netns mode the bridge address
# exists only while the bridge does; without it the request would leave through the default route.
ctl_ping() {
  [ -f "$CONF" ] && [ -f "$STATE/mode" ] || return 1
  [ "$(cat "$STATE/mode")" = localhost ] || ip link show "$BRIDGE" >/dev/null 2>&1 || return 1
  timeout 10 scontrol ping >/dev/null 2>&1
}

node_addr() {  # node index (1-based) -> address
  if [ "$(cat "$STATE/mode" 2>/dev/null)" = netns ]; then echo "$SUBNET.$((10 + $1))"; else echo 127.0.0.1; fi
}

netns_setup() {  # one namespace per node, veth into a private bridge; returns non-zero if impossible
  ip route show | grep -q "^$SUBNET\." && { echo "subnet $SUBNET.0/24 already routed here"; return 1; }
  ip link add "$BRIDGE" type bridge || return 1
  ip addr add "$SUBNET.1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up || return 1
  local i ns
  for i in 1 2 3 4; do
    ns=$NETNS_PREFIX${NODES[i-1]}
    ip netns add "$ns" || return 1
    ip link add "tgsl-${NODES[i-1]}" type veth peer name eth0 netns "$ns" || return 1
    ip link set "tgsl-${NODES[i-1]}" master "$BRIDGE" && ip link set "tgsl-${NODES[i-1]}" up || return 1
    ip -n "$ns" addr add "$SUBNET.$((10 + i))/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up || return 1
  done
}

netns_teardown() {
  local ns
  for ns in $(our_netns); do
    terminate "$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')" 5
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

hosts_remove() {  # rewrite in place: /etc/hosts may be a bind mount that cannot be replaced by rename
  grep -qF "$HOSTS_BEGIN" /etc/hosts 2>/dev/null || return 0
  local kept; kept=$(awk -v b="$HOSTS_BEGIN" -v e="$HOSTS_END" '$0==b{skip=1} !skip{print} $0==e{skip=0}' /etc/hosts)
  printf '%s\n' "$kept" >/etc/hosts
}

hosts_add() {
  hosts_remove
  { echo "$HOSTS_BEGIN"; local i; for i in 1 2 3 4; do echo "$(node_addr $i) ${NODES[i-1]}"; done; echo "$HOSTS_END"; } >>/etc/hosts
}

# ------------------------------------------------------------------ configuration

write_configs() {
  local mode=$1 ctl_addr=$2 i
  mkdir -p "$STATE"/{etc,log,run,spool/ctld,munge,mysql}
  for i in 1 2 3 4; do mkdir -p "$STATE/spool/${NODES[i-1]}"; done
  cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh ($mode mode). Regenerated at every start.
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)($ctl_addr)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime and scheduler intervals: a requeued job restarts in seconds, not minutes.
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5,bf_interval=5
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd, no cgroups on the test machine.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Nodes declare more CPUs than the machine has.
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=10
# submitit reads job states only from sacct: accounting must be on.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$ctl_addr
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
EOF
  for i in 1 2 3 4; do
    if [ "$mode" = netns ]; then
      echo "NodeName=${NODES[i-1]} NodeAddr=$(node_addr $i) Port=$SLURMD_PORT CPUs=$CPUS_PER_NODE RealMemory=$MEM_PER_NODE_MB State=UNKNOWN"
    else
      echo "NodeName=${NODES[i-1]} NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + 100 + i)) CPUs=$CPUS_PER_NODE RealMemory=$MEM_PER_NODE_MB State=UNKNOWN"
    fi
  done >>"$CONF"
  echo "PartitionName=$PARTITION Nodes=node[1-4] Default=YES MaxTime=INFINITE State=UP" >>"$CONF"

  # slurmdbd refuses a readable config (it holds the database password).
  ( umask 077; cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=$ctl_addr
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=textgan-test-only
StorageLoc=slurm_acct_db
EOF
  )
  chmod 600 "$STATE/etc/slurmdbd.conf"
}

# ------------------------------------------------------------------ daemons

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds (COMMAND bounds its own time)
  local secs=$1 what=$2 deadline=$((SECONDS + $1)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail_with_logs "$what did not come up within ${secs}s"
    sleep 0.2
  done
}

db() { timeout 30 mariadb --no-defaults --protocol=socket --socket="$STATE/mysql/mysqld.sock" -uroot "$@"; }

munge_answers() { timeout 5 munge -n -S "$MUNGE_SOCKET" 2>/dev/null | timeout 5 unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

# munged on the default socket: Slurm 22.05's client commands ignore AuthInfo=socket= when they talk to
# slurmdbd (sacctmgr/sacct fail on a private socket). One machine needs one munged: a munged that already
# answers there (the machine's own) is used and left alone; else ours runs with its own key.
start_munge() {
  if munge_answers; then say "using the munged already running on $MUNGE_SOCKET"; return; fi
  mkdir -p "$(dirname "$MUNGE_SOCKET")" && chmod 755 "$(dirname "$MUNGE_SOCKET")"
  chmod 700 "$STATE/munge"
  [ -s "$STATE/munge/munge.key" ] || mungekey --create --keyfile="$STATE/munge/munge.key"
  chmod 400 "$STATE/munge/munge.key"
  spawn "$STATE/log/munged.log" munged --foreground --force --key-file="$STATE/munge/munge.key" \
    --socket="$MUNGE_SOCKET" --pid-file="$STATE/run/munged.pid" \
    --seed-file="$STATE/munge/munged.seed"  # in the foreground it logs to stderr: munged.log
  wait_for 15 munged munge_answers
}

start_mariadb() {
  if [ ! -d "$STATE/mysql/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
      || fail_with_logs "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
  fi
  spawn "$STATE/log/mariadb.log" mariadbd --no-defaults --user=root --datadir="$STATE/mysql/data" \
    --socket="$STATE/mysql/mysqld.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --pid-file="$STATE/run/mariadb.pid" \
    --skip-name-resolve --innodb-buffer-pool-size=32M --skip-log-bin
  wait_for 60 mariadb db -e 'SELECT 1'
  db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
         CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'textgan-test-only';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
  spawn "$STATE/log/slurmdbd.log" slurmdbd
  wait_for 30 slurmdbd timeout 10 sacctmgr -n list cluster
  # The cluster must be known before slurmctld registers; an account for jobs that name one.
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i -Q add account "$CLUSTER" cluster="$CLUSTER" description=tests organization=tests >/dev/null 2>&1 || true
  sacctmgr -i -Q add user root account="$CLUSTER" cluster="$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || fail_with_logs "could not register cluster $CLUSTER in slurmdbd"
}

# The controller starts from a clean state every time: a job left "running" by an earlier cluster would
# hold its nodes until it timed out. Job ids continue after the highest one in the accounting database,
# so sacct never sees two jobs with one id.
start_slurmctld() {
  local last; last=$(db -N -e "SELECT COALESCE(MAX(id_job), 0) FROM slurm_acct_db.${CLUSTER}_job_table" 2>/dev/null || echo 0)
  sed -i "/^FirstJobId=/d" "$CONF" && echo "FirstJobId=$((${last:-0} + 1))" >>"$CONF"
  rm -rf "$STATE/spool/ctld" && mkdir -p "$STATE/spool/ctld"
  spawn "$STATE/log/slurmctld.log" slurmctld
  wait_for 30 slurmctld timeout 10 scontrol ping
}

start_slurmd() {  # start_slurmd MODE INDEX
  local node=${NODES[$2-1]}
  if [ "$1" = netns ]; then
    # Own network namespace and own UTS namespace: `hostname` inside the node's jobs says nodeN.
    # nsenter, not `ip netns exec`: that one also remounts /sys, which hides /sys/fs/cgroup from slurmd.
    spawn "$STATE/log/slurmd-$node.log" nsenter --net="/run/netns/$NETNS_PREFIX$node" \
      unshare --uts sh -c "hostname $node && exec slurmd -N $node"
  else
    spawn "$STATE/log/slurmd-$node.log" slurmd -N "$node"
  fi
}

# Nodes that registered and answer: idle, or busy with jobs (a trailing * would mean not responding).
ready_count() {
  timeout 10 sinfo -h -N -p "$PARTITION" -o '%N %t' 2>/dev/null | awk '$2 ~ /^(idle|mix|alloc|comp)$/' | sort -u | wc -l
}

wait_ready() {  # after a fresh start (no jobs) this means: all nodes idle
  local deadline=$((SECONDS + START_TIMEOUT))
  until [ "$(ready_count)" -ge ${#NODES[@]} ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail_with_logs \
      "not all ${#NODES[@]} nodes up after ${START_TIMEOUT}s: $(timeout 10 sinfo -N -h -o '%N=%t' 2>&1 | tr '\n' ' ')"
    sleep 0.5
  done
}

fail_with_logs() {
  echo "cluster.sh: error: $1" >&2
  cmd_logs 15 >&2
  exit 1
}

cmd_logs() {
  local n=${1:-30} f
  for f in "$STATE"/log/*.log; do
    [ -f "$f" ] || continue
    echo "----- $f (last $n lines)"; tail -n "$n" "$f"
  done
}

# ------------------------------------------------------------------ commands

slurm_pidfiles() {  # MariaDB and the Slurm daemons, in start order
  echo "$STATE/run/mariadb.pid $STATE/run/slurmdbd.pid $STATE/run/slurmctld.pid"
  local n; for n in "${NODES[@]}"; do echo "$STATE/run/slurmd-$n.pid"; done
}
daemon_pidfiles() { echo "$STATE/run/munged.pid"; slurm_pidfiles; }  # munged.pid only if we started it

running_daemons() {  # how many of MariaDB + the 7 Slurm daemons are alive
  local f c=0; for f in $(slurm_pidfiles); do pid_alive "$(pidfile_pid "$f")" && c=$((c + 1)); done; echo $c
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "start needs root (network namespaces, /etc/hosts, daemons as SlurmUser=root)"
  local left; left=$(missing_commands)
  [ -z "$left" ] || die "missing commands: $left; run: $0 install"
  local running; running=$(running_daemons)
  if [ "$running" -eq 7 ] && munge_answers && ctl_ping; then
    say "already running ($(cat "$STATE/mode") mode, state $STATE)"
    wait_ready
    return
  fi
  if [ "$running" -gt 0 ] || [ -f "$STATE/mode" ]; then say "partly running or not cleanly stopped: stopping first"; cmd_stop; fi
  local t0=$SECONDS mode ctl_addr reason="" port
  for port in $DB_PORT $DBD_PORT $CTLD_PORT $((SLURMD_PORT + 101)) $((SLURMD_PORT + 102)) $((SLURMD_PORT + 103)) $((SLURMD_PORT + 104)); do
    [ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] || die "TCP port $port is already in use here (ports used: $DB_PORT, $DBD_PORT, $CTLD_PORT, $((SLURMD_PORT + 101))-$((SLURMD_PORT + 104)))"
  done
  mkdir -p "$STATE/log"
  if [ "$MODE_WANTED" != localhost ]; then
    if reason=$(netns_setup 2>&1); then mode=netns; else
      netns_teardown
      [ "$MODE_WANTED" = netns ] && die "network namespaces unavailable: $reason"
      mode=localhost
    fi
  else mode=localhost; reason="TEXTGAN_SLURM_MODE=localhost"; fi
  echo "$mode" >"$STATE/mode"
  if [ "$mode" = netns ]; then
    ctl_addr=$SUBNET.1
    say "mode: netns (node1..node4 in network namespaces $NETNS_PREFIX*, $SUBNET.11-14, own hostnames)"
  else
    ctl_addr=127.0.0.1
    say "mode: localhost (4 slurmd on 127.0.0.1, ports $((SLURMD_PORT + 101))-$((SLURMD_PORT + 104)); netns not used: ${reason:-unknown})"
  fi
  write_configs "$mode" "$ctl_addr"
  hosts_add
  # Our own conf for plain `sinfo`/`sbatch` too, unless the machine already has one of its own.
  if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    mkdir -p /etc/slurm && ln -sfn "$CONF" /etc/slurm/slurm.conf
  else
    say "note: /etc/slurm/slurm.conf belongs to this machine; use: export SLURM_CONF=$CONF"
  fi
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurmctld
  local i; for i in 1 2 3 4; do rm -rf "$STATE/spool/${NODES[i-1]:?}"/*; start_slurmd "$mode" "$i"; done
  wait_ready
  say "started in $((SECONDS - t0))s: partition $PARTITION, ${#NODES[@]} nodes x $CPUS_PER_NODE cpus; logs in $STATE/log"
  say "export SLURM_CONF=$CONF"
}

cmd_stop() {
  [ "$(id -u)" = 0 ] || die "stop needs root"
  local t0=$SECONDS f pids
  # Cancel jobs first so their final state (CANCELLED) reaches the database. Jobs still completing (CG)
  # are already final there: their processes die with the nodes below.
  if ctl_ping && [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]; then
    timeout 10 squeue -h -o %i 2>/dev/null | xargs -r timeout 10 scancel --full 2>/dev/null || true
    local deadline=$((SECONDS + 5))
    while [ -n "$(timeout 10 squeue -h -t PD,CF,R,S,RQ,RS,RH -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.5
    done
  fi
  # What is left of jobs, and the nodes, go at once: a slurmd does not stop while it has job steps,
  # tasks may ignore SIGTERM (submitit's do, to checkpoint), and nothing of a node is kept (its spool
  # is wiped at start). Each other daemon takes 1.5-3 s to stop cleanly, in order: the controller,
  # accounting (it still writes what the controller sent), then the database and munge.
  local n wave
  pids=$(job_pids | tr '\n' ' ')
  for n in "${NODES[@]}"; do pids+=" $(pidfile_pid "$STATE/run/slurmd-$n.pid")"; done
  [ -z "${pids// }" ] || kill -KILL $pids 2>/dev/null || true
  for wave in slurmctld slurmdbd "mariadb munged"; do
    pids=""; for n in $wave; do pids+=" $(pidfile_pid "$STATE/run/$n.pid")"; done
    terminate "$pids" 10
  done
  for f in $(daemon_pidfiles); do rm -f "$f"; done
  netns_teardown
  # Anything that escaped (a slurmstepd or job task whose daemon died) carries the marker or descends from it.
  pids=$(marked_pids | tr '\n' ' ')
  [ -z "${pids// }" ] || terminate "$(with_descendants $pids | tr '\n' ' ')" 5
  hosts_remove
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ] && rm -f /etc/slurm/slurm.conf
  # No config may outlive the cluster: a client reading it would try the bridge address, which without
  # the bridge would leave the machine through the default route.
  rm -f "$STATE/mode" "$STATE/mysql/mysqld.sock" "$CONF"
  if [ "${1:-}" = --purge ]; then rm -rf "$STATE"; say "state $STATE deleted"; fi
  say "stopped in $((SECONDS - t0))s"
}

cmd_status() {
  local f pid name
  echo "state: $STATE   mode: $(cat "$STATE/mode" 2>/dev/null || echo 'not started')"
  for f in $(daemon_pidfiles); do
    pid=$(pidfile_pid "$f"); name=$(basename "$f" .pid)
    if pid_alive "$pid"; then echo "  $name: running (pid $pid)"; else echo "  $name: not running"; fi
  done
  local ns; ns=$(our_netns | tr '\n' ' ')
  echo "  network namespaces: ${ns:-none}"
  if ctl_ping; then
    timeout 10 sinfo -N -o '%N %P %t %c'
    timeout 10 squeue
  else
    echo "  slurmctld does not answer"
    return 3
  fi
}

( mkdir -p "$(dirname "$STATE")" ) 2>/dev/null || true
case "${1:-}" in
  install) cmd_install ;;
  start|stop)
    # One start/stop at a time (two test sessions starting together).
    exec 9>"$STATE-cluster.lock"; flock -w 300 9 || die "another cluster.sh start/stop holds $STATE-cluster.lock"
    if [ "$1" = start ]; then cmd_start; else shift; cmd_stop "$@"; fi ;;
  status) cmd_status ;;
  logs) cmd_logs "${2:-30}" ;;
  *) echo "usage: $0 install|start|stop [--purge]|status|logs [N]" >&2; exit 2 ;;
esac
