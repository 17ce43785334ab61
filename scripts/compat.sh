#!/usr/bin/env bash
# Do LLaMA-Factory and ms-swift train on a facellm export after the folder has moved?
#   bash scripts/compat.sh [--only llamafactory|swift] [--keep] [--rebuild] [--work DIR]
#
# Neither tool can share facellm's environment (their pins on transformers/peft/trl/datasets differ
# from it and from each other), so each gets a venv of its own under $FACELLM_COMPAT_DIR (default
# ~/.cache/facellm-compat), built once and reused while its pins stay the same. Then, with the
# project's venv (.venv, `make install`), it writes a tiny random Qwen2-VL and a 200-image synthetic
# dataset, MOVES the dataset folder (its first path no longer exists) and, from an empty, unrelated
# working directory, trains 2 LoRA steps with each tool on the moved folder's ShareGPT export:
#   - LLaMA-Factory: --dataset_dir MOVED --dataset facellm_train (its dataset_info.json; image paths
#     are relative to the folder, which LLaMA-Factory uses as media_dir by default);
#   - ms-swift: the ShareGPT file with ROOT_IMAGE_DIR=MOVED (ms-swift's documented root for relative
#     image paths; it reads no dataset_info.json), then the same file rewritten in place by
#     `facellm data export MOVED --formats sharegpt --absolute-paths`, with no ROOT_IMAGE_DIR.
# A run passes when the tool exits 0 AND its own log shows: every training row read, the image
# expanded into image tokens (no literal "<image>" text, no image that failed to load), 2 steps with a
# finite loss, and the adapter file written. One PASS/FAIL line per run, with versions; exit 1 on any FAIL.
# Training runs on the CPU with one thread (CUDA hidden): it checks reading, not speed.
set -euo pipefail

usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
ONLY=all KEEP=0 REBUILD=0 WORK=
while [ $# -gt 0 ]; do
  case $1 in
    --only) ONLY=${2:?--only needs llamafactory or swift}; shift 2 ;;
    --keep) KEEP=1; shift ;;          # keep the work folder (dataset, model, logs, adapters)
    --rebuild) REBUILD=1; shift ;;    # rebuild the tools' venvs even when their pins are unchanged
    --work) WORK=${2:?--work needs a folder}; KEEP=1; shift 2 ;;   # an empty or new folder, kept
    -h|--help) usage ;;
    *) echo "compat.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
case $ONLY in all|llamafactory|swift) ;; *) echo "compat.sh: --only takes llamafactory or swift" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
FACELLM=${FACELLM_VENV:-$REPO/.venv}/bin/facellm
[ -x "$FACELLM" ] || { echo "compat.sh: $FACELLM not found: run \`make install\` first" >&2; exit 2; }
CACHE=${FACELLM_COMPAT_DIR:-$HOME/.cache/facellm-compat}
PYTHON=${PYTHON:-python3}
# torch first and pinned: left to pip, each tool pulls PyPI's CUDA build (LLaMA-Factory's venv is then
# 6.6 GB). 2.13.0 is the CPU build scripts/install.sh uses; torchvision 0.28.0 is the release made for
# it (an unpinned torchvision is the newest, which requires a newer torch and drags the CUDA build in).
TORCH=${FACELLM_TORCH:-2.13.0}
TORCHVISION=${FACELLM_TORCHVISION:-0.28.0}
# What worked on 2026-12-06. LLaMA-Factory 0.9.5 caps transformers at 5.6 and peft at 0.18; ms-swift
# 4.6.0 takes transformers < 5.20 and needs qwen-vl-utils for Qwen2-VL, which it does not declare.
LF_PINS="llamafactory==0.9.5 transformers==5.6.0 peft==0.18.1 trl==0.24.0 accelerate==1.11.0 datasets==4.0.0"
SWIFT_PINS="ms-swift==4.6.0 transformers==5.19.0 peft==0.20.0 trl==0.29.1 accelerate==1.16.0 datasets==4.8.4 qwen-vl-utils==0.0.14"

T0=$SECONDS
FAILED=0
RESULTS=()
pass() { RESULTS+=("PASS  $*"); }
fail() { RESULTS+=("FAIL  $*"); FAILED=1; }
log() { echo "[compat $((SECONDS - T0))s] $*" >&2; }

# ---- the tools' venvs -------------------------------------------------------------------------------
# make_venv NAME PINS...: $CACHE/NAME with torch, torchvision and PINS, reused when its stamp says the
# same pins. Prints nothing; the pip log is NAME/install.log.
make_venv() {
  local name=$1; shift
  local dir=$CACHE/$name want="torch==$TORCH torchvision==$TORCHVISION $*"
  if [ "$REBUILD" = 0 ] && [ "$(cat "$dir/.facellm-compat-pins" 2>/dev/null)" = "$want" ]; then
    log "reusing $dir"
  else
    log "building $dir (a few minutes)"
    rm -rf "$dir"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$dir" || return 1
    # one resolve with torch pinned, so that pip keeps the CPU build rather than "upgrading" it;
    # no wheel cache: the venvs are 2 GB each already
    # shellcheck disable=SC2086
    "$dir/bin/python" -m pip install --disable-pip-version-check --no-cache-dir -q $want >"$dir/install.log" 2>&1 \
      || { tail -5 "$dir/install.log" >&2; return 1; }
  fi
  fix_torch_companions "$dir" || return 1
  echo "$want" >"$dir/.facellm-compat-pins"
}

# PyPI's torchvision and torchaudio wheels are CUDA builds; beside CPU torch, `import torchvision` dies on
# its C ops and `import torchaudio` on its extension. transformers needs torchvision for Qwen2-VL's video
# processor (even for images) and LLaMA-Factory imports torchaudio at start-up (for audio, unused here).
# Neither bears on how an export is read. Where they cannot import (torchvision does on a CUDA machine;
# PyPI's newest torchaudio, 2.11.1, is built for torch 2.11 and loads beside no other torch):
fix_torch_companions() {
  local dir=$1 site
  bash "$REPO/scripts/torchvision-hook.sh" "$dir" || return 1
  site=$("$dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  if [ -d "$site/torchaudio/lib" ] && ! "$dir/bin/python" -c "import torchaudio" >/dev/null 2>&1; then
    # torchaudio imports without its compiled extension (it supports that layout): drop the one built
    # for another torch; only audio data would need it
    rm -f "$site"/torchaudio/lib/*.so
  fi
  "$dir/bin/python" -c "import torch, torchvision, transformers, peft" \
    || { echo "$dir: torch/torchvision/transformers/peft do not import" >&2; return 1; }
}

# versions PYTHON DIST...: "dist x.y, dist x.y" as installed where PYTHON runs
versions() {
  local py=$1; shift
  "$py" - "$@" <<'PY'
import importlib.metadata as m, sys
print(", ".join(f"{d} {m.version(d)}" for d in sys.argv[1:]))
PY
}

# ---- the dataset and the model, with the project's venv ---------------------------------------------
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/facellm-compat.XXXXXX")
elif [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
  echo "compat.sh: --work $WORK is not empty" >&2; exit 2
else
  mkdir -p "$WORK"
fi
WORK=$(cd "$WORK" && pwd)
cleanup() { if [ "$KEEP" = 1 ] || [ "$FAILED" = 1 ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

# one thread everywhere: another job may be using the other cores; offline: no hub is contacted
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CUDA_VISIBLE_DEVICES=
export HF_HOME=$WORK/hf-home MODELSCOPE_CACHE=$WORK/modelscope   # their caches die with the work folder

log "tiny Qwen2-VL and a 200-image synthetic dataset in $WORK"
"$FACELLM" tiny-model --family qwen2_vl --out "$WORK/model" >"$WORK/tiny-model.log" 2>&1 \
  || { tail -5 "$WORK/tiny-model.log" >&2; exit 1; }
"$FACELLM" data build --source synthetic --n 200 --workers 1 --out "$WORK/built/faces" >"$WORK/build.log" 2>&1 \
  || { tail -5 "$WORK/build.log" >&2; exit 1; }
# moved, not copied: nothing may still find the images where they were written
mkdir -p "$WORK/moved" "$WORK/elsewhere"
mv "$WORK/built/faces" "$WORK/moved/faces"
rmdir "$WORK/built"
DATA=$WORK/moved/faces
ROWS=$(wc -l <"$DATA/sharegpt/train.jsonl")
if head -1 "$DATA/sharegpt/train.jsonl" | grep -q '"images": \["/'; then
  echo "compat.sh: $DATA/sharegpt/train.jsonl has absolute image paths; expected paths relative to the folder" >&2
  exit 1
fi

# ---- LLaMA-Factory ----------------------------------------------------------------------------------
run_llamafactory() {
  local venv=$CACHE/llamafactory-0.9.5 out=$WORK/lf-out what vers detail rc=0
  what="llamafactory --dataset_dir MOVED"
  if ! make_venv llamafactory-0.9.5 $LF_PINS; then fail "$what: venv install failed ($venv/install.log)"; return; fi
  vers=$(versions "$venv/bin/python" llamafactory transformers peft torch)
  cat >"$WORK/lf.yaml" <<EOF
model_name_or_path: $WORK/model
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
template: qwen2_vl
dataset_dir: $DATA
dataset: facellm_train
cutoff_len: 1024
overwrite_cache: true
preprocessing_num_workers: 1
dataloader_num_workers: 0
output_dir: $out
overwrite_output_dir: true
per_device_train_batch_size: 2
max_steps: 2
logging_steps: 1
save_steps: 1000
learning_rate: 1.0e-4
report_to: none
EOF
  log "LLaMA-Factory: 2 steps from $WORK/elsewhere"
  (cd "$WORK/elsewhere" && "$venv/bin/llamafactory-cli" train "$WORK/lf.yaml") >"$WORK/lf.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then fail "$what ($vers): exit $rc; log $WORK/lf.log: $(grep -a -E 'Error|error' "$WORK/lf.log" | tail -1)"; return; fi
  if detail=$("$venv/bin/python" - "$WORK/lf.log" "$out" "$ROWS" <<'PY'
import json, math, re, sys
from pathlib import Path
log, out, rows = Path(sys.argv[1]).read_text(errors="replace"), Path(sys.argv[2]), int(sys.argv[3])
problems = []
# LLaMA-Factory falls back to the path as written (i.e. from the cwd) when media_dir lacks the file
if "does not exist in `media_dir`" in log:
    problems.append("an image path did not resolve in media_dir")
n = re.search(r"Num examples = ([\d,]+)", log)
if not n or int(n.group(1).replace(",", "")) != rows:
    problems.append(f"trained on {n and n.group(1)} rows, the file has {rows}")
# the example it prints: the text the model saw for the first row
ex = re.search(r"\ninputs:\n(.*?)\nlabel_ids:", log, re.S)
pads = ex.group(1).count("<|image_pad|>") if ex else 0
if not ex or pads == 0 or "<image>" in ex.group(1):
    problems.append("the printed example has no image tokens (or a literal <image>)")
losses = [r["loss"] for r in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines()) if "loss" in r]
if len(losses) != 2 or not all(math.isfinite(x) for x in losses):
    problems.append(f"losses logged: {losses}")
adapter = out / "adapter_model.safetensors"
if not adapter.is_file() or adapter.stat().st_size == 0:
    problems.append("no adapter_model.safetensors")
if problems:
    print("; ".join(problems)); sys.exit(1)
print(f"{rows} rows read, {pads} image tokens for the example's image, 2 steps, "
      f"loss {losses[0]:.3f} -> {losses[1]:.3f}, adapter written")
PY
  ); then pass "$what ($vers): $detail"; else fail "$what ($vers): $detail; log $WORK/lf.log"; fi
}

# ---- ms-swift ---------------------------------------------------------------------------------------
# ms-swift's qwen2_vl template hard-codes Qwen2-VL's token ids (<|image_pad|> = 151655). facellm's tiny
# model has its own small vocabulary, so with the stock template the image would stay one unexpanded
# token (seen: "<|vision_start|>[5 * 1]<|vision_end|>"). The same template, with the ids read from the
# tiny model's processor, registered through ms-swift's --custom_register_path. A real Qwen2-VL
# checkpoint uses `--template qwen2_vl` as it is.
write_swift_template() {
  cat >"$WORK/swift_tiny_template.py" <<'EOF'
from swift.template import register_template
from swift.template.templates.qwen import Qwen2VLTemplate, QwenTemplateMeta


class TinyQwen2VLTemplate(Qwen2VLTemplate):
    def init_processor(self, processor):
        super().init_processor(processor)
        if processor is not None:
            self.image_token_id = processor.image_token_id
            self.video_token_id = processor.video_token_id


register_template(QwenTemplateMeta("facellm_tiny_qwen2_vl", template_cls=TinyQwen2VLTemplate))
EOF
}

# swift_sft LABEL OUT [ENV=VALUE...]: 2 steps on $DATA/sharegpt/train.jsonl from $WORK/elsewhere
swift_sft() {
  local label=$1 out=$2 venv=$CACHE/ms-swift-4.6.0 vers detail rc=0; shift 2
  vers=$(versions "$venv/bin/python" ms-swift transformers peft torch)
  log "ms-swift ($label): 2 steps from $WORK/elsewhere"
  # --model_type: the tiny model's config matches both qwen2_vl and qwen2_gme; --strict: a row that fails
  # (an image not found) raises instead of being swapped for another row; --check_model false: no
  # ModelScope query (offline); --use_hf: no ModelScope hub either
  (cd "$WORK/elsewhere" && env "$@" "$venv/bin/swift" sft \
      --model "$WORK/model" --model_type qwen2_vl \
      --template facellm_tiny_qwen2_vl --custom_register_path "$WORK/swift_tiny_template.py" \
      --tuner_type lora --dataset "$DATA/sharegpt/train.jsonl" --strict true \
      --max_steps 2 --per_device_train_batch_size 2 --logging_steps 1 --learning_rate 1e-4 \
      --dataset_num_proc 1 --dataloader_num_workers 0 --report_to none \
      --use_hf true --check_model false --output_dir "$out") >"$out.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then fail "$label ($vers): exit $rc; log $out.log: $(grep -a -E 'Error' "$out.log" | tail -1)"; return; fi
  if detail=$("$venv/bin/python" - "$out.log" "$out" "$ROWS" <<'PY'
import json, math, re, sys
from pathlib import Path
log, out, rows = Path(sys.argv[1]).read_text(errors="replace"), Path(sys.argv[2]), int(sys.argv[3])
problems = []
# without --strict a failing row is logged and replaced by a random other one
if "errors in the template.encode" in log:
    problems.append("a row failed to encode (see the log)")
n = re.search(r"train_dataset: Dataset\(\{.*?num_rows: (\d+)", log, re.S)
if not n or int(n.group(1)) != rows:
    problems.append(f"train_dataset has {n and n.group(1)} rows, the file has {rows}")
# the example it prints, image tokens folded: "<|vision_start|>[ID * COUNT]<|vision_end|>"
ex = re.search(r"\[INFO:swift\] \[INPUT\] (.*?)\n\[INFO:swift\] \[LABELS_IDS\]", log, re.S)
m = ex and re.search(r"<\|vision_start\|>\[\d+ \* (\d+)\]<\|vision_end\|>", ex.group(1))
pads = int(m.group(1)) if m else 0
if not ex or pads < 2 or "<image>" in ex.group(1):
    problems.append(f"the printed example's image is not expanded into image tokens ({ex and ex.group(1)[:200]!r})")
runs = sorted(out.glob("v*-*"))
records = [json.loads(l) for l in (runs[-1] / "logging.jsonl").read_text().splitlines()] if runs else []
losses = [r["loss"] for r in records if "loss" in r and "global_step/max_steps" in r]
steps = [r["global_step/max_steps"] for r in records if "loss" in r]
if steps != ["1/2", "2/2"] or not all(math.isfinite(x) for x in losses):
    problems.append(f"steps {steps}, losses {losses}")
if not runs or not (runs[-1] / "checkpoint-2" / "adapter_model.safetensors").is_file():
    problems.append("no checkpoint-2/adapter_model.safetensors")
if problems:
    print("; ".join(problems)); sys.exit(1)
print(f"{rows} rows read, {pads} image tokens for the example's image, 2 steps, "
      f"loss {losses[0]:.3f} -> {losses[1]:.3f}, adapter written")
PY
  ); then pass "$label ($vers): $detail"; else fail "$label ($vers): $detail; log $out.log"; fi
}

run_swift() {
  if ! make_venv ms-swift-4.6.0 $SWIFT_PINS; then
    fail "swift: venv install failed ($CACHE/ms-swift-4.6.0/install.log)"; return
  fi
  write_swift_template
  # 1. the export as built (paths relative to the folder), with ms-swift's documented image root
  swift_sft "swift ROOT_IMAGE_DIR=MOVED" "$WORK/swift-root" ROOT_IMAGE_DIR="$DATA"
  # 2. the moved folder's ShareGPT rewritten with absolute paths, no image root: how any tool that
  #    resolves paths from its working directory reads it
  if ! "$FACELLM" data export "$DATA" --formats sharegpt --absolute-paths >"$WORK/export-abs.log" 2>&1; then
    fail "swift --absolute-paths: facellm data export failed ($WORK/export-abs.log)"; return
  fi
  if ! head -1 "$DATA/sharegpt/train.jsonl" | grep -q "\"images\": \[\"$DATA/"; then
    fail "swift --absolute-paths: facellm data export did not write paths under $DATA"; return
  fi
  swift_sft "swift after facellm data export MOVED --absolute-paths" "$WORK/swift-abs"
}

[ "$ONLY" = swift ] || run_llamafactory
[ "$ONLY" = llamafactory ] || run_swift

echo
printf '%s\n' "${RESULTS[@]}"
echo "compat.sh: $((SECONDS - T0)) s; venvs in $CACHE ($(du -sh "$CACHE" 2>/dev/null | cut -f1))"
exit "$FAILED"
