"""Batch attribute captioning: images in, one schema-validated JSON record per image (or per face) out.

Two ways to reach a model, the same output:

- ``endpoint``: a client of the OpenAI API (``facellm serve`` with either engine, or any compatible server);
  each image (or each detected face, cropped as the training data was) is sent with ``response_format`` =
  the JSON schema, so the server decodes under the schema.
- no endpoint: the engine runs in the caption workers themselves (vLLM's offline ``LLM`` where installed,
  transformers otherwise; :mod:`serve.offline`), fed a batch of images per call with no HTTP in between;
  workers are processes here, or actors on a Ray cluster (:mod:`facellm.parallel`).

Every answer is validated again here against the schema.

The output is append-only JSONL, one line per image (per face with ``--per-face``) written as soon as
the image is done, so a killed run loses at most the images in flight. A re-run skips every image the
file already holds, success or failure (``retry_failed`` gives failures another try), so each image
appears exactly once.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from facellm.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from facellm.client import ATTRIBUTE_PROMPT, AnswerError, RecordRequest, openai_client
from facellm.errors import FacellmError
from facellm.images import ImageError, load_image, to_data_url
from facellm.inflight import bounded_map
from facellm.parallel import FanOut, fan_out
from facellm.records import is_dataset_dir, load_splits
from facellm.schema import json_schema

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_PROMPT = ATTRIBUTE_PROMPT
FREE_TEXT_PROMPT = "Describe this person's face: expression, hair, glasses, skin tone and head pose."


class CaptionError(FacellmError):
    pass


@dataclass
class CaptionConfig:
    inputs: list[str]
    out: Path
    model: str  # with endpoint: the served model name; without: a model directory
    schema: dict | None  # None: free-text captions
    endpoint: str | None = None  # a running OpenAI-compatible server; None: the engine runs in the workers
    adapter: tuple[str, str] | None = None  # (name, dir) of a LoRA adapter (no endpoint)
    engine: str = "transformers"  # vllm | transformers (no endpoint; serve.launch.choose_engine resolves auto)
    fanout: FanOut = field(default_factory=FanOut)  # engine workers here or on a Ray cluster (no endpoint)
    prompt: str | None = None
    per_face: bool = False
    concurrency: int = 8  # requests in flight (endpoint)
    max_tokens: int = 256
    max_model_len: int | None = None  # vLLM's context (no endpoint; None: from training, else the model's own)
    api_key: str | None = None
    retry_failed: bool = False


def load_schema(spec: str) -> dict | None:
    """``attributes`` (facellm's attribute record), ``none`` (free text) or a JSON Schema file."""
    if spec == "attributes":
        return json_schema()
    if spec == "none":
        return None
    path = Path(spec)
    if not path.is_file():
        raise CaptionError(f"--schema {spec}: not 'attributes', 'none' or a JSON schema file")
    import jsonschema

    try:
        schema = json.loads(path.read_text())
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except (json.JSONDecodeError, jsonschema.SchemaError) as e:
        raise CaptionError(f"{path}: not a valid JSON schema ({str(e).splitlines()[0]})") from None
    return schema


def collect_images(inputs: list[str]) -> list[Path]:
    """Image files from folders (recursive), globs, list files (one path per line) and facellm datasets."""
    found: list[Path] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir() and is_dataset_dir(path):  # a facellm dataset: the images its records use
            records = [r for split in load_splits(path).values() for r in split]
            found += sorted({path / image for r in records for image in r["images"]})
        elif path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file() and path.suffix.lower() in (".txt", ".lst"):
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            found += [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
        elif path.is_file():
            found.append(path)
        elif matches := sorted(glob.glob(spec, recursive=True)):
            found += [Path(m) for m in matches if Path(m).is_file()]
        else:
            raise CaptionError(f"{spec}: no such file, folder or matching glob")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise CaptionError(f"no images in {' '.join(inputs)}")
    return unique


def _finished(out: Path, retry_failed: bool) -> set[str]:
    """Images the output already holds. A torn last line (killed mid-write) is cut off; with
    ``retry_failed`` failure lines are dropped (atomically) so their images run again."""
    if not out.is_file():
        return set()
    raw = out.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        write_bytes_atomic(out, raw)
    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    if retry_failed and any("error" in line for line in lines):
        lines = [line for line in lines if "error" not in line]
        write_text_atomic(out, "".join(json.dumps(line) + "\n" for line in lines))
    return {line["image"] for line in lines}


class _Inputs:
    """What the model is asked about: the image, or each face's crop (one face detector per thread: LiteRT is
    not thread-safe)."""

    def __init__(self, cfg: CaptionConfig):
        self.cfg = cfg
        self.request = RecordRequest(cfg.schema, cfg.prompt or (DEFAULT_PROMPT if cfg.schema else FREE_TEXT_PROMPT),
                                     cfg.max_tokens)
        self._local = threading.local()

    def _faces(self, image):
        from facellm.faces import FaceAnalyzer

        if not hasattr(self._local, "analyzer"):
            self._local.analyzer = FaceAnalyzer()
        return self._local.analyzer.detect(image)

    def of(self, path: Path) -> list[tuple[dict, object]]:
        """One image's output lines before the answer, each with the image to ask about, or None where the
        line is already complete (an error)."""
        key = str(path)
        try:
            image = load_image(path)
        except ImageError as e:
            return [({"image": key, "error": f"image: {e}"}, None)]
        if not self.cfg.per_face:
            return [({"image": key}, image)]
        from facellm.faces import crop_box

        faces = self._faces(image)
        if not faces:
            return [({"image": key, "error": "no face found"}, None)]
        return [({"image": key, "face": i, "box": [round(v, 1) for v in face.box]},
                 image.crop(crop_box(face.box, image.width, image.height))) for i, face in enumerate(faces)]

    def answer(self, text: str, cut_short: bool) -> dict:
        """{"attributes": ...} or {"text": ...} from an answer; {"error": ...} when it is unusable."""
        if self.cfg.schema is None:
            return {"text": text.strip()}
        try:
            return {"attributes": self.request.read_text(text, cut_short)}
        except AnswerError as e:
            return {"error": str(e)}


class Captioner(_Inputs):
    """Captions one image at a time through the API of a running server."""

    def __init__(self, cfg: CaptionConfig):
        super().__init__(cfg)
        self.client = openai_client(cfg.endpoint, cfg.api_key)

    def ask(self, image) -> dict:
        import openai

        try:
            reply = self.client.chat.completions.create(model=self.cfg.model,
                                                        **self.request.arguments(to_data_url(image)))
        except openai.APIConnectionError:
            raise  # the server is gone: stop the run rather than fail every image
        except openai.APIStatusError as e:
            return {"error": f"API {e.status_code}: {e.message}"}
        choice = reply.choices[0]
        return self.answer(choice.message.content or "", choice.finish_reason == "length")

    def caption(self, path: Path) -> list[dict]:
        """The output lines of one image: one, or one per face."""
        return [head if image is None else {**head, **self.ask(image)} for head, image in self.of(path)]


class CaptionWorker(_Inputs):
    """A worker (see facellm.parallel) holding its own engine: a batch of images, every face of them asked in
    one engine call."""

    def __init__(self, cfg: CaptionConfig):
        from serve.offline import open_engine

        super().__init__(cfg)
        self.engine = open_engine(cfg.model, cfg.adapter, cfg.engine, max_model_len=cfg.max_model_len)

    def __call__(self, paths: list[Path]) -> list[list[dict]]:
        inputs = [self.of(path) for path in paths]
        answers = iter(self._ask([image for lines in inputs for _, image in lines if image is not None]))
        return [[head if image is None else {**head, **next(answers)} for head, image in lines] for lines in inputs]

    def _ask(self, images: list) -> list[dict]:
        if not images:
            return []
        try:
            replies = self.engine.chat(images, self.request.prompt, self.cfg.schema, self.cfg.max_tokens)
        except Exception as e:
            if len(images) > 1:  # ask one by one, so an image the model cannot take fails alone
                return [answer for image in images for answer in self._ask([image])]
            log.warning("the model failed on an image: %r", e)  # the details go to the log, the reason to the line
            return [{"error": "the model could not answer about this image (details in the log)"}]
        return [self.answer(text, cut_short) for text, cut_short in replies]


# images per engine call: transformers generates one padded batch; vLLM schedules a call's requests itself
# and keeps its batch fuller with more of them (vLLM offline on 2 CPU cores, tiny Qwen2-VL, 16 tokens:
# 200 images/s at 64 per call, 256 at 256; noisy, see benchmarks/RESULTS.md)
BATCH_SIZE = {"transformers": 16, "vllm": 64}


def caption_workers(cfg: CaptionConfig) -> int | None:
    """Engines to start here unless told: one where the engine fills the machine by itself (vLLM uses every
    core; a GPU holds one engine; more GPUs: use --ray, which gives each engine its own), else one
    transformers engine per core."""
    if cfg.fanout.workers or cfg.fanout.ray:
        return cfg.fanout.workers
    import torch

    return 1 if cfg.engine == "vllm" or torch.cuda.is_available() else None


def run_captioning(cfg: CaptionConfig) -> dict:
    """Caption every input image not yet in ``cfg.out``; a summary of this run and of the whole file."""
    import openai

    images = collect_images(cfg.inputs)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    done = _finished(cfg.out, cfg.retry_failed)
    todo = [p for p in images if str(p) not in done]
    counts = {"images": len(images), "skipped": len(images) - len(todo), "captioned": 0, "failed": 0}
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="caption", unit="img")
    if cfg.endpoint:
        captioner = Captioner(cfg)
        results = bounded_map(captioner.caption, todo, cfg.concurrency, name="caption")
    else:
        fanout = replace(cfg.fanout, workers=caption_workers(cfg))
        results = fan_out(functools.partial(CaptionWorker, cfg), todo, fanout)
    with cfg.out.open("a") as out, closing(results):
        try:
            for path, lines in results:
                if isinstance(lines, Exception):
                    raise lines  # closing the results drops the images not yet sent
                if str(path) in done:
                    continue  # a batch Ray ran twice (its actor died after finishing it): written once
                done.add(str(path))
                out.write("".join(json.dumps(line) + "\n" for line in lines))  # one image's lines at once
                out.flush()
                counts["failed" if any("error" in line for line in lines) else "captioned"] += 1
                bar.update(1)
        except openai.APIConnectionError:
            raise CaptionError(f"{cfg.endpoint}: the API stopped answering; finished images are saved in {cfg.out}, "
                               "run the same command again to continue") from None
        finally:
            bar.close()
    seconds = time.perf_counter() - start
    counts["images_per_s"] = round((counts["captioned"] + counts["failed"]) / seconds, 2) if seconds else None
    return counts


def export_results(results: Path, formats: list[str]) -> list[Path]:
    """CSV / Parquet next to the JSONL: one row per line, attributes as columns."""
    import pandas as pd

    rows = []
    for line in results.read_text().splitlines():
        record = json.loads(line)
        attributes = record.pop("attributes", None) or {}
        if "box" in record:
            record["box"] = json.dumps(record["box"])
        rows.append({**record, **{f"attr.{k}": (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                  for k, v in attributes.items()}})
    frame = pd.DataFrame(rows)
    written = []
    for fmt in formats:
        path = results.with_suffix({"csv": ".csv", "parquet": ".parquet"}[fmt])
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False) if fmt == "csv" else frame.to_parquet(tmp, index=False)
        written.append(path)
    return written
