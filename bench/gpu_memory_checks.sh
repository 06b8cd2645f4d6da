#!/usr/bin/env bash
# Memory truth on a real NVIDIA GPU (issue 18): each recorded config alone, nvidia-smi per
# process against gpu/usage.py's reading and against fit's configured estimate; then two
# instances on one device at once (do the per-process overheads add up?); and the host
# side of a partially offloaded instance.
#
# Needs: python3 with the project importable (PYTHONPATH), $LLAMA_SERVER (a CUDA build),
# $LLAMA_ORCH_HOME, /tmp/models/big.gguf and /tmp/models/small.gguf (the H200 recordings'
# shapes: tools/mk_sized_gguf.py), nvidia-smi, curl, and $O an output folder. Raw outputs
# go to $O/mem-*; a summary table ends the output. About a minute on an H200.
set -u
: "${O:?set O to an output folder}" "${LLAMA_SERVER:?}" "${LLAMA_ORCH_HOME:?}"
mkdir -p "$O" "$LLAMA_ORCH_HOME/instances"
T0=$(date +%s)
MODELS=${MODELS:-/tmp/models}
orch() { timeout 120 python3 -m llama_orchestrator "$@"; }
step() { echo "== +$(( $(date +%s) - T0 ))s $*"; }

config() {  # NAME MODEL CTX NP LAYERS PORT
  mkdir -p "$LLAMA_ORCH_HOME/instances/$1"
  printf '{"name": "%s", "model": {"path": "%s/%s.gguf", "context_size": %s, "batch_size": 512, "threads": 4}, "server": {"port": %s, "parallel": %s}, "gpu": {"backend": "cuda", "device_id": 0, "layers": %s}}\n' \
    "$1" "$MODELS" "$2" "$3" "$6" "$4" "$5" > "$LLAMA_ORCH_HOME/instances/$1/config.json"
}

pid_of() {  # NAME PORT -> the server's PID (ps --json, else the process on that port)
  local pid
  pid=$(orch ps --json 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
rows = rows.get("instances", rows) if isinstance(rows, dict) else rows
print(next((r.get("pid") or "" for r in rows if r.get("name") == sys.argv[1]), ""))' "$1" 2>/dev/null)
  [ -n "$pid" ] || pid=$(pgrep -n -f -- "--port $2( |$)")
  echo "$pid"
}

measure() {  # NAME PID TAG: nvidia-smi, gpu/usage.py and the configured estimate
  nvidia-smi --query-compute-apps=pid,used_memory,gpu_uuid --format=csv,noheader,nounits \
    > "$O/mem-smi-$1$3.csv" 2>&1
  nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits \
    > "$O/mem-gpu-$1$3.csv" 2>&1
  cat "/proc/$2/smaps_rollup" > "$O/mem-smaps-$1$3.txt" 2>&1
  python3 - "$1" "$2" > "$O/mem-usage-$1$3.json" 2>&1 <<'PY'
import json, sys
from llama_orchestrator.config.loader import load_instance
from llama_orchestrator.doctor.estimate import configured_fit
from llama_orchestrator.gpu.usage import measure
from llama_orchestrator.home import Home
import os
from pathlib import Path
name, pid = sys.argv[1], int(sys.argv[2])
readings = {k: v.to_dict() for k, v in measure(pid, "cuda", 0).items()}
conf = configured_fit(load_instance(Home(Path(os.environ["LLAMA_ORCH_HOME"])), name))
print(json.dumps({"pid": pid, "readings": readings, "configured": conf}, indent=1))
PY
}

prompt() {  # PORT: one completion with a ~1000-token prompt (the CUDA pool may grow)
  python3 -c 'import json; print(json.dumps({"prompt": "hello world " * 500, "max_tokens": 16}))' \
    > "$O/mem-prompt.json"
  curl -s -m 60 "http://127.0.0.1:$1/v1/completions" -H 'Content-Type: application/json' \
    -d @"$O/mem-prompt.json" > /dev/null
}

step "alone: each recorded config"
port=8111
for spec in "big big 8192 4 999" "bigctx big 32768 8 999" "bighalf big 8192 1 11" "small small 8192 2 999"; do
  set -- $spec
  config "$1" "$2" "$3" "$4" "$5" "$port"
  orch fit "$1" --json > "$O/mem-fit-$1.json" 2>&1
  orch up "$1" > "$O/mem-up-$1.txt" 2>&1
  pid=$(pid_of "$1" "$port")
  if [ -z "$pid" ]; then step "  $1: no server PID (see mem-up-$1.txt)"; port=$((port + 1)); continue; fi
  measure "$1" "$pid" ""
  prompt "$port"
  measure "$1" "$pid" "-after"
  orch down "$1" >> "$O/mem-up-$1.txt" 2>&1
  step "  $1 (pid $pid): $(tr '\n' ' ' < "$O/mem-smi-$1.csv")/ after a prompt: $(tr '\n' ' ' < "$O/mem-smi-$1-after.csv")"
  port=$((port + 1))
done

step "two at once on cuda:0: big + small"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits > "$O/mem-gpu-pair-before.csv" 2>&1
orch up big > "$O/mem-up-pair.txt" 2>&1
orch up small >> "$O/mem-up-pair.txt" 2>&1
for n in big:8111 small:8114; do
  pid=$(pid_of "${n%%:*}" "${n##*:}")
  [ -n "$pid" ] && measure "${n%%:*}" "$pid" "-pair"
done
orch down big >> "$O/mem-up-pair.txt" 2>&1; orch down small >> "$O/mem-up-pair.txt" 2>&1
orch down --all > /dev/null 2>&1

step "summary"
python3 - "$O" <<'PY'
import json, sys
from pathlib import Path
from llama_orchestrator.gpu.apps import parse_compute_apps
O = Path(sys.argv[1]); MiB = 2**20
def load(name):
    try:
        return json.loads((O / name).read_text())
    except (OSError, ValueError):
        return None
def smi(name, pid):
    try:
        rows = parse_compute_apps((O / name).read_text())
    except Exception as e:
        return None
    return sum(r.bytes or 0 for r in rows if r.pid == pid) or None
def mib(v):
    return "-" if v is None else f"{v / MiB:.0f}"
print(f"{'config':<8} {'estimate':>8} {'+600':>6} {'smi':>6} {'usage':>6} {'err%':>6} {'after':>6} {'host est':>8} {'host PSS':>8}")
alone = {}
for name in ("big", "bigctx", "bighalf", "small"):
    u = load(f"mem-usage-{name}.json"); a = load(f"mem-usage-{name}-after.json")
    if not u:
        print(f"{name:<8} (no reading)"); continue
    c, r = u["configured"], u["readings"]
    gpu = r.get("cuda:0", {}).get("bytes"); host = r.get("cpu", {}).get("bytes")
    real = smi(f"mem-smi-{name}.csv", u["pid"]); alone[name] = real
    after = smi(f"mem-smi-{name}-after.csv", u["pid"]) if a else None
    guess = c["device_total"] + c["overhead"]
    err = f"{100 * (guess - real) / real:+.1f}" if real else "-"
    print(f"{name:<8} {mib(c['device_total']):>8} {mib(guess):>6} {mib(real):>6} {mib(gpu):>6} "
          f"{err:>6} {mib(after):>6} {mib(c['host_total'] + c['host_overhead']):>8} {mib(host):>8}")
pair = {n: load(f"mem-usage-{n}-pair.json") for n in ("big", "small")}
if all(pair.values()):
    together = {n: smi(f"mem-smi-{n}-pair.csv", p["pid"]) for n, p in pair.items()}
    print("two at once:", ", ".join(f"{n} {mib(v)} MiB (alone {mib(alone.get(n))})" for n, v in together.items()))
    try:
        before = int((O / "mem-gpu-pair-before.csv").read_text().split(",")[1])
        used = int((O / "mem-gpu-big-pair.csv").read_text().split(",")[1])
        print(f"device used: {used - before} MiB more than before; per-process sum "
              f"{mib(sum(v or 0 for v in together.values()))} MiB")
    except (OSError, ValueError, IndexError):
        pass
PY
step "done"
