"""Batch attribute captioning: images in, one schema-validated JSON record per image (or per face) out.

A client of the OpenAI API (``facellm serve`` with either engine, or any compatible server): each image
(or each detected face, cropped as the training data was) is sent with ``response_format`` = the JSON
schema, so the server decodes under the schema; every answer is validated again here.

The output is append-only JSONL, one line per image (per face with ``--per-face``) written as soon as
the image is done, so a killed run loses at most the images in flight. A re-run skips every image the
file already holds, success or failure (``retry_failed`` gives failures another try), so each image
appears exactly once.
"""

from __future__ import annotations

import glob
import json
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from facellm.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from facellm.client import ATTRIBUTE_PROMPT, AnswerError, RecordRequest, openai_client
from facellm.errors import FacellmError
from facellm.images import ImageError, load_image, to_data_url
from facellm.inflight import bounded_map
from facellm.records import is_dataset_dir, load_splits
from facellm.schema import json_schema

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_PROMPT = ATTRIBUTE_PROMPT
FREE_TEXT_PROMPT = "Describe this person's face: expression, hair, glasses, skin tone and head pose."


class CaptionError(FacellmError):
    pass


@dataclass
class CaptionConfig:
    inputs: list[str]
    out: Path
    endpoint: str
    model: str
    schema: dict | None  # None: free-text captions
    prompt: str | None = None
    per_face: bool = False
    concurrency: int = 8
    max_tokens: int = 256
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


class Captioner:
    def __init__(self, cfg: CaptionConfig):
        self.cfg = cfg
        self.client = openai_client(cfg.endpoint, cfg.api_key)
        self.request = RecordRequest(cfg.schema, cfg.prompt or (DEFAULT_PROMPT if cfg.schema else FREE_TEXT_PROMPT),
                                     cfg.max_tokens)
        self._local = threading.local()  # one face detector per worker thread (LiteRT is not thread-safe)

    def _faces(self, image):
        from facellm.faces import FaceAnalyzer

        if not hasattr(self._local, "analyzer"):
            self._local.analyzer = FaceAnalyzer()
        return self._local.analyzer.detect(image)

    def ask(self, image) -> dict:
        """{"attributes": ...} or {"text": ...} for one image; {"error": ...} when the answer is unusable."""
        import openai

        try:
            reply = self.client.chat.completions.create(model=self.cfg.model,
                                                        **self.request.arguments(to_data_url(image)))
        except openai.APIConnectionError:
            raise  # the server is gone: stop the run rather than fail every image
        except openai.APIStatusError as e:
            return {"error": f"API {e.status_code}: {e.message}"}
        if self.cfg.schema is None:
            return {"text": (reply.choices[0].message.content or "").strip()}
        try:
            return {"attributes": self.request.read(reply)}
        except AnswerError as e:
            return {"error": str(e)}

    def caption(self, path: Path) -> list[dict]:
        """The output lines of one image: one, or one per face."""
        key = str(path)
        try:
            image = load_image(path)
        except ImageError as e:
            return [{"image": key, "error": f"image: {e}"}]
        if not self.cfg.per_face:
            return [{"image": key, **self.ask(image)}]
        from facellm.faces import crop_box

        faces = self._faces(image)
        if not faces:
            return [{"image": key, "error": "no face found"}]
        return [{"image": key, "face": i, "box": [round(v, 1) for v in face.box],
                 **self.ask(image.crop(crop_box(face.box, image.width, image.height)))}
                for i, face in enumerate(faces)]


def run_captioning(cfg: CaptionConfig) -> dict:
    """Caption every input image not yet in ``cfg.out``; a summary of this run and of the whole file."""
    import openai

    images = collect_images(cfg.inputs)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    done = _finished(cfg.out, cfg.retry_failed)
    todo = [p for p in images if str(p) not in done]
    captioner = Captioner(cfg)
    counts = {"images": len(images), "skipped": len(images) - len(todo), "captioned": 0, "failed": 0}
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="caption", unit="img")
    with cfg.out.open("a") as out, \
            closing(bounded_map(captioner.caption, todo, cfg.concurrency, name="caption")) as results:
        try:
            for _, lines in results:
                if isinstance(lines, Exception):
                    raise lines  # closing the results drops the images not yet sent
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
