# Shared settings of the launch scripts (sourced, not run). Override any of them in the environment.
#   APMPO_VENV        virtual environment with requirements.txt installed (activated if set)
#   RAY_HEAD_IP       address of the head node as the other nodes reach it (default 127.0.0.1)
#   RAY_PORT          GCS port of the head (default 6379)
#   RAY_DASHBOARD_HOST / RAY_DASHBOARD_PORT   dashboard + job API (default 127.0.0.1:8265)
#   RAY_TMP_DIR       Ray's session directory of this node (default /tmp/ray)
set -euo pipefail
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${LAUNCH_DIR}/.." && pwd)"
if [[ -n "${APMPO_VENV:-}" ]]; then
  # `ray job submit` runs the entrypoint with the PATH of the shell that ran `ray start`.
  # shellcheck disable=SC1091
  source "${APMPO_VENV}/bin/activate"
fi
RAY_HEAD_IP="${RAY_HEAD_IP:-127.0.0.1}"
RAY_PORT="${RAY_PORT:-6379}"
# The dashboard and job-submission API have no authentication: whoever reaches this port can run
# code on the cluster. Keep it on loopback and use an SSH tunnel (see docs/openrlhf.md).
RAY_DASHBOARD_HOST="${RAY_DASHBOARD_HOST:-127.0.0.1}"
RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
RAY_TMP_DIR="${RAY_TMP_DIR:-/tmp/ray}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

# cluster_address NAME ADDRESS: prints "loopback" or "private"; exits 2 for a public (globally
# routable) address or a host name. Ray's node-to-node ports have no authentication: they belong on
# loopback or a private cluster network, never on a public interface.
cluster_address() {
  python "${LAUNCH_DIR}/cluster_network.py" address "$1" "$2"
}

# only_loopback_interfaces WHY: exits 2 unless this network namespace has no address outside
# loopback (e.g. under `unshare --net`). With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, which a second
# node on 127.0.0.1 needs, Ray's processes listen on every interface of the namespace.
only_loopback_interfaces() {
  python "${LAUNCH_DIR}/cluster_network.py" loopback-only "$1"
}
