"""Typed settings of `facellm data build`, and the stage configs they make (ingest, synthetic build, teacher).

A YAML file holds the settings in sections (see ``data_pipeline/configs/``); every build writes its resolved
settings to ``OUT/build_config.yaml``, which builds the same dataset again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data_pipeline.sources import ALIGNED_MODES, SOURCES
from data_pipeline.templates import KINDS
from facellm.config import Config, ConfigError
from facellm.errors import FacellmError

if TYPE_CHECKING:
    from data_pipeline.build import BuildConfig
    from data_pipeline.ingest import IngestConfig
    from data_pipeline.synthetic import SceneOptions
    from data_pipeline.teacher import TeacherConfig
    from data_pipeline.templates import TemplateOptions
    from facellm.parallel import FanOut

# Long flag of `facellm data build` -> the setting it sets. Before the typed config, YAML files used the
# flags' names as keys; such a key is refused with a message naming its setting.
FLAGS = {
    "source": "source", "root": "root", "labels": "labels", "columns": "columns", "out": "out",
    "val-size": "val_size", "test-size": "test_size", "seed": "seed",
    "qa": "templates.kinds", "mcq-per-face": "templates.mcq_per_face", "refusal-rate": "templates.refusal_rate",
    "teacher-url": "teacher.url", "teacher-model": "teacher.model", "teacher-qa": "teacher.qa_per_category",
    "teacher-concurrency": "teacher.concurrency", "teacher-timeout": "teacher.timeout",
    "teacher-retries": "teacher.retries",
    "min-face": "faces.min_face", "max-faces": "faces.max_faces", "multi-face": "faces.multi_face",
    "min-blur": "faces.min_blur", "dedupe": "faces.dedupe", "aligned": "faces.aligned",
    "n": "synthetic.n", "image-size": "synthetic.image_size", "scene-faces": "synthetic.scene_faces",
    "lighting": "synthetic.lighting", "blur": "synthetic.blur", "occlusion": "synthetic.occlusion",
    "workers": "compute.workers", "ray": "compute.ray",
}


@dataclass
class TemplateSettings:
    kinds: tuple[str, ...] = KINDS  # template families to write
    mcq_per_face: int = 1  # multiple-choice questions per face
    refusal_rate: float = 0.1  # share of faces that also get an identity question and its polite decline


@dataclass
class TeacherSettings:
    url: str | None = None  # OpenAI-compatible endpoint of a teacher LLM; None: templates only
    model: str | None = None  # the model name the endpoint serves
    qa_per_category: int = 2  # teacher QA per FaceLLM category per face
    concurrency: int = 8  # requests in flight
    timeout: float = 60.0  # seconds per request
    retries: int = 6  # on 429/5xx/timeouts/bad JSON, with exponential backoff and jitter


@dataclass
class FaceSettings:  # real sources
    min_face: int = 32  # pixels, shorter side of the face box
    max_faces: int = 1  # images with more faces are skipped, or one record set per face (multi_face: each)
    multi_face: str = "skip"  # skip | each
    min_blur: float = 0.0  # Laplacian variance of the face crop; 0 keeps all
    dedupe: int = -1  # reject crops within this many bits of an earlier one's 64-bit pHash; -1 keeps all
    aligned: str = "auto"  # images are aligned face crops: auto (as the source's layout says: RAF-DB aligned,
    # CelebA img_align_celeba, UTKFace chips) | yes (any folder of face crops) | no


@dataclass
class SyntheticSettings:  # the synthetic source
    n: int = 1000  # images
    image_size: int = 112  # pixels per face
    scene_faces: int = 1  # faces per image: 1 to this many
    lighting: tuple[str, ...] = ("normal",)  # drawn per image from normal, dim, bright, side
    blur: float = 0.0  # chance that an image is blurred
    occlusion: float = 0.0  # chance that a face's mouth or eyes are covered


@dataclass
class ComputeSettings:  # where the per-image work runs; the dataset is the same wherever it runs
    workers: int | None = None  # processes here (default: one per core), or actors on the Ray cluster
    ray: str | None = None  # Ray cluster address (auto, HOST:PORT, ray://HOST:PORT); None: this machine


@dataclass
class DataBuildConfig(Config):
    RENAMED = {old: new for flag, new in FLAGS.items() for old in (flag, flag.replace("-", "_")) if old != new}

    source: str = "synthetic"  # one of SOURCES: synthetic faces, or a dataset in its own layout under root
    root: str | None = None  # the dataset's folder (real sources); for hf also a Parquet file
    labels: str | None = None  # folder source: CSV or JSONL of labels with a 'file' column
    columns: dict[str, str] = field(default_factory=dict)  # hf: role (image, age, identity, ...) -> column
    out: str | None = None  # output dataset directory
    val_size: float = 0.05  # validation: fraction, or image count (synthetic)
    test_size: float = 0.05  # test: fraction, or image count (synthetic)
    seed: int = 0
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    faces: FaceSettings = field(default_factory=FaceSettings)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    compute: ComputeSettings = field(default_factory=ComputeSettings)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigError(f"source {self.source!r}: expected one of {', '.join(SOURCES)}")
        if not self.out:
            raise ConfigError("no output directory: pass --out DIR or set `out:` in the config")
        if self.source != "synthetic" and not self.root:
            raise ConfigError(f"source {self.source} needs root (--root DIR: the dataset's folder)")
        if self.source == "synthetic" and self.synthetic.n < 3:
            raise ConfigError(f"synthetic.n {self.synthetic.n} (--n): need at least 3 images "
                              "(train, validation, test)")
        if min(self.val_size, self.test_size) < 0:
            raise ConfigError(f"val_size {self.val_size}, test_size {self.test_size}: expected sizes >= 0")
        if self.faces.multi_face not in ("skip", "each"):
            raise ConfigError(f"faces.multi_face {self.faces.multi_face!r}: expected skip or each")
        if self.faces.aligned not in ALIGNED_MODES:
            raise ConfigError(f"faces.aligned {self.faces.aligned!r} (--aligned): expected one of "
                              f"{', '.join(ALIGNED_MODES)}")
        if self.teacher.url and not self.teacher.model:
            raise ConfigError("teacher.url needs teacher.model (--teacher-model: the model name the endpoint serves)")
        # the options' own checks (template kinds, lighting, ranges, workers), before anything is written
        template_options(self)
        scene_options(self)
        fanout(self)


def template_options(cfg: DataBuildConfig) -> TemplateOptions:
    from data_pipeline.templates import TemplateOptions

    t = cfg.templates
    try:
        return TemplateOptions(kinds=t.kinds, mcq_per_face=t.mcq_per_face, refusal_rate=t.refusal_rate)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def scene_options(cfg: DataBuildConfig) -> SceneOptions:
    from data_pipeline.synthetic import SceneOptions

    s = cfg.synthetic
    try:
        return SceneOptions(max_faces=s.scene_faces, lighting=s.lighting, blur=s.blur, occlusion=s.occlusion)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def fanout(cfg: DataBuildConfig) -> FanOut:
    from facellm.parallel import FanOut

    try:
        return FanOut(workers=cfg.compute.workers, ray=cfg.compute.ray)
    except FacellmError as e:
        raise ConfigError(str(e)) from None


def teacher_config(cfg: DataBuildConfig) -> TeacherConfig | None:
    """The teacher's settings, or None where no teacher is configured (the API key comes from the environment)."""
    from data_pipeline.teacher import TeacherConfig

    t = cfg.teacher
    if not t.url:
        return None
    return TeacherConfig(url=t.url, model=t.model, qa_per_category=t.qa_per_category, concurrency=t.concurrency,
                         timeout=t.timeout, max_retries=t.retries)


def build_config(cfg: DataBuildConfig) -> BuildConfig:
    """The synthetic build's settings (``source: synthetic``)."""
    from data_pipeline.build import BuildConfig

    return BuildConfig(out=Path(cfg.out), n=cfg.synthetic.n, val_size=cfg.val_size, test_size=cfg.test_size,
                       seed=cfg.seed, image_size=cfg.synthetic.image_size, scene=scene_options(cfg),
                       templates=template_options(cfg), fanout=fanout(cfg))


def ingest_config(cfg: DataBuildConfig) -> IngestConfig:
    """The ingest's settings (every source but synthetic)."""
    from data_pipeline.ingest import IngestConfig

    f = cfg.faces
    return IngestConfig(source=cfg.source, root=Path(cfg.root), out=Path(cfg.out),
                        labels=Path(cfg.labels) if cfg.labels else None, columns=dict(cfg.columns),
                        min_face=f.min_face, max_faces=f.max_faces, multi_face=f.multi_face, min_blur=f.min_blur,
                        aligned=f.aligned,
                        val_size=cfg.val_size, test_size=cfg.test_size, seed=cfg.seed, dedupe=f.dedupe,
                        templates=template_options(cfg), fanout=fanout(cfg))
