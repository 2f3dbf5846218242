#!/usr/bin/env bash
# A throwaway single-node Slurm for bench's tests (tests/test_slurm.py starts it when it has to):
# munge + slurmctld + slurmd, and slurmdbd on MariaDB for `sacct` (BENCH_SLURM_ACCOUNTING=0 skips
# it; bench then reads job ends from squeue alone). Debian 12 packages, root, no systemd, loopback.
#
#   sudo bash scripts/slurm_setup.sh          # ~15 s once the packages are installed
#   sudo bash scripts/slurm_setup.sh --install-only   # just the missing packages (.ci/run, early)
#   sudo bash scripts/slurm_teardown.sh       # stops exactly the daemons this script started
#
# Every daemon started here is listed with its PID in $BENCH_SLURM_DIR/pids; teardown reads it.
# KillWait is 5 s (Slurm's default is 30) so that `scontrol requeue` and `scancel` take effect
# quickly: submitit jobs ignore SIGTERM and run on until the SIGKILL that follows it.
# cred_expire is 20 s (default 120): a job's credential stays revoked on the node that long after
# it ends, and Slurm holds a requeued job as long before it starts again; starting it sooner (e.g.
# `scontrol update StartTime=now`) gets it killed as "Job credential revoked". The scheduler looks
# at pending jobs every 5 s (default 60 s, 30 s for backfill), so a held job starts soon after.
set -euo pipefail

DIR=${BENCH_SLURM_DIR:-/tmp/bench-slurm}
ACCOUNTING=${BENCH_SLURM_ACCOUNTING:-1}
NODE=$(hostname -s)
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "slurm_setup.sh: must run as root" >&2; exit 1; }

retry() {  # retry CMD for up to 30 s; on failure show the named log
  local cmd=$1 log=$2
  for _ in $(seq 60); do bash -c "$cmd" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "slurm_setup.sh: gave up waiting for: $cmd" >&2; tail -n 30 "$log" >&2 || true; exit 1
}
remember() {  # remember NAME PIDFILE: record a daemon we started, for teardown
  retry "test -s $2" /dev/null
  echo "$1 $(cat "$2")" >> "$DIR/pids"
}

# --- packages: only what is missing ------------------------------------------------------------
wanted="munge slurmctld slurmd slurm-client"
[ "$ACCOUNTING" = 1 ] && wanted="$wanted slurmdbd mariadb-server"
missing=""
for pkg in $wanted; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
[ "${1:-}" = --install-only ] && exit 0

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
touch "$DIR/pids"  # appended to: a failed earlier attempt may have started daemons
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts

# --- munge: the authentication every Slurm daemon and client uses ------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || head -c 1024 /dev/urandom > /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  rm -f /run/munge/munged.pid
  su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=/run/munge/munged.pid"
  remember munged /run/munge/munged.pid
  retry "munge -n | unmunge" /dev/null
fi

# --- slurm.conf ---------------------------------------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
  storage="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux"
else
  storage="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
mem_mb=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=bench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
KillWait=5
AuthInfo=cred_expire=20
SchedulerParameters=sched_interval=5,bf_interval=5
$storage
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) RealMemory=$((mem_mb * 9 / 10)) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# --- accounting: MariaDB on its unix socket only, slurmdbd on loopback --------------------------
if [ "$ACCOUNTING" = 1 ]; then
  if ! mariadb -u root -e 'select 1' >/dev/null 2>&1; then  # else reuse the running server
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    install -d -o mysql -g root -m 0755 /run/mysqld
    rm -f /run/mysqld/bench-mariadb.pid  # mariadbd runs as mysql: its pid file lives in its own folder
    /usr/sbin/mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/bench-mariadb.pid > "$DIR/log/mariadb.log" 2>&1 &
    retry "mariadb -u root -e 'select 1'" "$DIR/log/mariadb.log"
    remember mariadbd /run/mysqld/bench-mariadb.pid
  fi
  mariadb -u root -e "CREATE USER IF NOT EXISTS 'bench_slurm'@'localhost' IDENTIFIED BY 'bench';
                      ALTER USER 'bench_slurm'@'localhost' IDENTIFIED BY 'bench';
                      GRANT ALL ON bench_slurm_acct.* TO 'bench_slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=bench_slurm
StoragePass=bench
StorageLoc=bench_slurm_acct
EOF
  chmod 0600 /etc/slurm/slurmdbd.conf
  rm -f "$DIR/slurmdbd.pid"
  slurmdbd
  remember slurmdbd "$DIR/slurmdbd.pid"
  retry "sacctmgr -n list cluster" "$DIR/log/slurmdbd.log"
fi

# --- controller and compute daemon --------------------------------------------------------------
rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid"
slurmctld -i
remember slurmctld "$DIR/slurmctld.pid"
slurmd
remember slurmd "$DIR/slurmd.pid"
retry "sinfo -h -o %T | grep -qx idle" "$DIR/log/slurmctld.log"
srun -t 1 true
echo "slurm_setup.sh: Slurm is up (node $NODE, $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) CPUs); daemons in $DIR/pids"
