#!/usr/bin/env bash
# A one-node Slurm on this machine (slurmctld and slurmd on localhost), for trying array jobs
# such as `sbatch --array=0-3 --wrap 'bertprobe tune FILE'` without a cluster. Needs root and
# Debian's packages; installs them when missing. A running Slurm is left alone; one that does
# not answer is restarted.
#
#   sudo scripts/start_slurm.sh        then: sinfo; sbatch ...; scontrol shutdown to stop
set -euo pipefail

if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge > /dev/null
fi

# Each probe is bounded: with munged gone, Slurm's commands retry for minutes before failing.
munge_answers() { timeout 10 munge -n 2> /dev/null | timeout 10 unmunge > /dev/null 2>&1; }
slurm_idle() { timeout 10 sinfo --noheader --states=idle 2> /dev/null | grep -q idle; }

if munge_answers && slurm_idle; then
    echo "Slurm is already running"; sinfo; exit 0
fi

node=$(hostname -s)
cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ {print int($2 / 1024) - 512}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown -R slurm:slurm /var/spool/slurmctld /var/log/slurm 2> /dev/null || true

# No cgroups: containers often have none to give, and one node needs no isolation.
cat > /etc/slurm/slurm.conf << EOF
ClusterName=local
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory_mb} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF

[ -s /etc/munge/munge.key ] || mungekey --create > /dev/null 2>&1 || \
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2> /dev/null
chown munge:munge /etc/munge/munge.key /run/munge 2> /dev/null || true
chmod 400 /etc/munge/munge.key
# A socket file is no sign of life: a munged that died (or a restart that kept /run) leaves it.
if ! munge_answers; then
    pkill -x munged || true
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    su -s /bin/sh munge -c munged 2> /dev/null || munged --force
fi
for _ in $(seq 10); do munge_answers && break; sleep 1; done
munge_answers || { echo "munged does not answer; see its log under /var/log/munge" >&2; exit 1; }

# daemons left from an earlier start that no longer answer are replaced
pkill -x slurmctld || true
pkill -x slurmd || true
sleep 1
slurmctld
slurmd
for _ in $(seq 30); do
    if slurm_idle; then
        sinfo; exit 0
    fi
    sleep 1
done
echo "Slurm did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
