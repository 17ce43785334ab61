"""Procedural face images with exact ground truth.

A face is a :class:`FaceSpec` (attribute labels plus geometry jitter) rendered
by :func:`render`; :func:`sample_spec` draws one from a seed. Features are bold
and large on purpose: a tiny VLM trained for minutes must be able to see them.
Changing one field of a spec and rendering again gives the counterfactual image
(same face, one attribute changed).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

SKIN = {"light": (238, 206, 179), "medium": (194, 140, 96), "dark": (104, 66, 42)}
HAIR = {"black": (22, 22, 24), "brown": (112, 66, 30), "blond": (236, 204, 96), "gray": (168, 168, 170)}
EXPRESSIONS = ("happy", "sad", "neutral", "surprised")
POSES = ("left", "frontal", "right")
MIRRORED_POSE = {"left": "right", "frontal": "frontal", "right": "left"}


@dataclass(frozen=True)
class FaceSpec:
    expression: str
    glasses: str  # "yes" | "no"
    skin_tone: str
    head_pose: str  # viewer's side the head is turned to
    hair_color: str
    size: int = 112  # square canvas
    cx: float = 0.5  # face centre, fraction of canvas
    cy: float = 0.52
    face_w: float = 0.62  # face width, fraction of canvas
    background: tuple[int, int, int] = (120, 140, 160)
    noise: float = 3.0
    seed: int = 0  # pixel-noise seed

    @property
    def labels(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("expression", "glasses", "skin_tone", "head_pose", "hair_color")}

    def mirrored(self) -> "FaceSpec":
        """The left-right mirror image's spec (what :func:`render` of the mirror shows)."""
        return replace(self, head_pose=MIRRORED_POSE[self.head_pose], cx=1.0 - self.cx)


def sample_spec(seed: int, size: int = 112) -> FaceSpec:
    rng = random.Random(seed)
    background = tuple(rng.randint(60, 200) for _ in range(3))
    return FaceSpec(
        expression=rng.choice(EXPRESSIONS),
        glasses=rng.choice(("yes", "no")),
        skin_tone=rng.choice(tuple(SKIN)),
        head_pose=rng.choice(POSES),
        hair_color=rng.choice(tuple(HAIR)),
        size=size,
        cx=rng.uniform(0.46, 0.54),
        cy=rng.uniform(0.53, 0.57),
        face_w=rng.uniform(0.64, 0.72),
        background=background,
        noise=rng.uniform(0.0, 6.0),
        seed=seed,
    )


def _jitter(color, rng, amount=10):
    return tuple(int(np.clip(c + rng.randint(-amount, amount), 0, 255)) for c in color)


def render(spec: FaceSpec) -> Image.Image:
    """Draw the face. Coordinates are computed at 2x and downsampled for clean edges."""
    rng = random.Random(spec.seed)
    scale = 2
    s = spec.size * scale
    img = Image.new("RGB", (s, s), spec.background)
    d = ImageDraw.Draw(img)
    w = spec.face_w * s
    h = 1.22 * w
    cx, cy = spec.cx * s, spec.cy * s
    turn = {"left": -1, "frontal": 0, "right": 1}[spec.head_pose]
    fx = cx + turn * 0.2 * w  # where the features sit: shifted toward the turn
    line = max(2, int(0.06 * w))
    dark = (30, 20, 20)

    # hair behind the head, then the face; a turned head shows hair on the far side
    hair = _jitter(HAIR[spec.hair_color], rng, 8)
    d.ellipse([cx - 0.56 * w - turn * 0.08 * w, cy - 0.62 * h, cx + 0.56 * w - turn * 0.08 * w, cy + 0.1 * h], fill=hair)
    skin = _jitter(SKIN[spec.skin_tone], rng, 8)
    d.ellipse([cx - w / 2, cy - h / 2 + 0.06 * h, cx + w / 2, cy + h / 2], fill=skin)
    # ear on the side facing away from the turn (the visible one)
    if turn:
        ex = cx - turn * 0.5 * w
        d.ellipse([ex - 0.08 * w, cy - 0.06 * h, ex + 0.08 * w, cy + 0.1 * h], fill=skin, outline=dark, width=line // 2)

    # eyes and brows
    eye_y = cy - 0.06 * h
    eye_dx = 0.2 * w * (1 - 0.25 * abs(turn))
    brow_y = eye_y - {"surprised": 0.17, "sad": 0.11, "happy": 0.12, "neutral": 0.12}[spec.expression] * h
    for side in (-1, 1):
        ex = fx + side * eye_dx
        r = 0.075 * w
        d.ellipse([ex - r, eye_y - r, ex + r, eye_y + r], fill=(250, 250, 250))
        d.ellipse([ex - r * 0.55 + turn * r * 0.35, eye_y - r * 0.55, ex + r * 0.55 + turn * r * 0.35, eye_y + r * 0.55], fill=dark)
        bw = 0.12 * w
        if spec.expression == "sad":  # inner ends raised
            d.line([ex - bw, brow_y + side * 0.04 * h, ex + bw, brow_y - side * 0.04 * h], fill=dark, width=line)
        else:
            d.line([ex - bw, brow_y, ex + bw, brow_y], fill=dark, width=line)
        if spec.glasses == "yes":
            gr = 0.15 * w
            d.rectangle([ex - gr, eye_y - gr * 0.8, ex + gr, eye_y + gr * 0.8], outline=(10, 10, 10), width=line)
    if spec.glasses == "yes":
        d.line([fx - eye_dx + 0.15 * w, eye_y, fx + eye_dx - 0.15 * w, eye_y], fill=(10, 10, 10), width=line)

    # nose points toward the turn
    ny = cy + 0.08 * h
    if turn:
        nose = [(fx, ny - 0.1 * h), (fx + turn * 0.12 * w, ny + 0.02 * h), (fx, ny + 0.02 * h)]
    else:
        nose = [(fx, ny - 0.09 * h), (fx - 0.06 * w, ny + 0.02 * h), (fx + 0.06 * w, ny + 0.02 * h)]
    d.polygon(nose, outline=dark, width=line // 2 + 1)

    # mouth: the strongest expression cue
    my, mw = cy + 0.27 * h, 0.27 * w
    lips = (150, 30, 40)
    if spec.expression == "happy":
        d.chord([fx - mw, my - 0.14 * h, fx + mw, my + 0.12 * h], 0, 180, fill=lips, outline=dark, width=line // 2)
    elif spec.expression == "sad":  # the smile's shape upside down: the red mass sits above the corners
        d.chord([fx - mw, my - 0.06 * h, fx + mw, my + 0.2 * h], 180, 360, fill=lips, outline=dark, width=line // 2)
    elif spec.expression == "surprised":
        d.ellipse([fx - 0.13 * w, my - 0.09 * h, fx + 0.13 * w, my + 0.1 * h], fill=(60, 10, 15), outline=lips, width=line)
    else:
        d.line([fx - mw, my + 0.03 * h, fx + mw, my + 0.03 * h], fill=lips, width=line + 2)

    img = img.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    if spec.noise > 0:
        noise = np.random.default_rng(spec.seed).normal(0.0, spec.noise, (spec.size, spec.size, 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return img


def face_box(spec: FaceSpec) -> list[float]:
    """Face bounding box in pixels [x0, y0, x1, y1] (hair included)."""
    w = spec.face_w * spec.size
    h = 1.22 * w
    cx, cy = spec.cx * spec.size, spec.cy * spec.size
    return [round(cx - 0.6 * w, 1), round(cy - 0.62 * h, 1), round(cx + 0.6 * w, 1), round(cy + h / 2, 1)]


def generate_spec(index: int, seed: int = 0, size: int = 112) -> FaceSpec:
    """Spec of image number ``index`` of the stream ``seed``.

    Every odd image is the mirror of the even one before it, left and right
    swapped: this teaches the turn direction rather than the face's position.
    """
    spec = sample_spec(seed * 1_000_003 + index - index % 2, size)
    return spec.mirrored() if index % 2 else spec


def generate(index: int, seed: int = 0, size: int = 112) -> tuple[Image.Image, FaceSpec]:
    spec = generate_spec(index, seed, size)
    if index % 2:
        return ImageOps.mirror(render(spec.mirrored())), spec
    return render(spec), spec


def spec_dict(spec: FaceSpec) -> dict:
    return asdict(spec)


# ------------------------------------------------------------------ scenes: several faces, lighting, blur, occlusion

# what the renderer draws for each expression: exact observations for an expression chain of thought
EXPRESSION_OBSERVATIONS = {
    "happy": ["the mouth is curved upward and open in a wide smile", "the brows are level"],
    "sad": ["the mouth corners are turned down", "the inner ends of the brows are raised"],
    "surprised": ["the lips are parted in a round shape", "the brows are raised high above the eyes"],
    "neutral": ["the lips form a straight line", "the brows are level"],
}
LIGHTING = ("normal", "dim", "bright", "side")
OCCLUSIONS = ("none", "mouth", "eyes")
# what an occluder hides: those labels are no longer visible, so they are dropped
OCCLUDED_LABELS = {"mouth": ("expression",), "eyes": ("glasses",)}


@dataclass(frozen=True)
class SceneOptions:
    max_faces: int = 1  # faces per image drawn from 1..max_faces
    lighting: tuple[str, ...] = ("normal",)  # drawn per image
    blur: float = 0.0  # chance that an image is Gaussian-blurred
    occlusion: float = 0.0  # chance that a face is partly covered (mouth or eyes)

    def __post_init__(self):
        if self.max_faces < 1:
            raise ValueError(f"max_faces {self.max_faces}: need at least 1")
        if not self.lighting:
            raise ValueError(f"no lighting given; choose from: {', '.join(LIGHTING)}")
        if unknown := set(self.lighting) - set(LIGHTING):
            raise ValueError(f"unknown lighting {sorted(unknown)}; known: {', '.join(LIGHTING)}")
        for name in ("blur", "occlusion"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name)}: expected a probability in [0, 1]")

    @property
    def plain(self) -> bool:
        return self.max_faces == 1 and self.lighting == ("normal",) and not self.blur and not self.occlusion


@dataclass
class SceneFace:
    spec: FaceSpec
    box: list[float]  # pixels of the scene image
    labels: dict[str, str]  # what is visible: occluded attributes removed
    occlusion: str  # none | mouth | eyes
    observations: list[str] | None


def _occlude(image: Image.Image, spec: FaceSpec, part: str) -> None:
    """A flat patch over the mouth (a face mask) or the eyes (a bar), in the face's own image."""
    d = ImageDraw.Draw(image)
    w = spec.face_w * spec.size
    h = 1.22 * w
    cx, cy = spec.cx * spec.size, spec.cy * spec.size
    if part == "mouth":
        d.rounded_rectangle([cx - 0.45 * w, cy + 0.12 * h, cx + 0.45 * w, cy + 0.45 * h], radius=int(0.1 * w),
                            fill=(90, 150, 210))
    else:
        d.rectangle([cx - 0.5 * w, cy - 0.16 * h, cx + 0.5 * w, cy + 0.04 * h], fill=(25, 25, 25))


def _light(image: Image.Image, lighting: str) -> Image.Image:
    if lighting == "normal":
        return image
    a = np.asarray(image, dtype=np.float32)
    if lighting == "dim":
        a = a * 0.3
    elif lighting == "bright":
        a = a * 0.5 + 150
    elif lighting == "side":  # light from the left, falling off to the right
        a = a * np.linspace(1.25, 0.35, a.shape[1], dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def generate_scene(index: int, seed: int, size: int, options: SceneOptions) -> tuple[Image.Image, list[SceneFace], dict]:
    """Image number ``index``: 1..max_faces faces side by side, then lighting and blur over the whole image.
    Returns the image, its faces (boxes, visible labels) and the scene's conditions."""
    rng = random.Random(f"scene-{seed}-{index}")
    n = rng.randint(1, options.max_faces)
    canvas = Image.new("RGB", (size * n, size))
    faces = []
    for k in range(n):
        # one face: the plain stream, mirror pairs included; several: distinct people, half of them mirrored
        number = index if options.max_faces == 1 else (index * options.max_faces + k) * 2 + k % 2
        image, spec = generate(number, seed, size)
        occlusion = rng.choice(OCCLUSIONS[1:]) if rng.random() < options.occlusion else "none"
        if occlusion != "none":
            _occlude(image, spec, occlusion)  # spec's geometry is the returned image's, mirrored or not
        labels = {a: v for a, v in spec.labels.items() if a not in OCCLUDED_LABELS.get(occlusion, ())}
        canvas.paste(image, (k * size, 0))
        x0, y0, x1, y1 = face_box(spec)
        box = [round(max(0.0, x0) + k * size, 1), max(0.0, y0), round(min(size, x1) + k * size, 1), min(size, y1)]
        observations = EXPRESSION_OBSERVATIONS[spec.expression] if "expression" in labels else None
        faces.append(SceneFace(spec, box, labels, occlusion, observations))
    lighting = rng.choice(options.lighting)
    canvas = _light(canvas, lighting)
    blurred = rng.random() < options.blur
    if blurred:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=size / 40))
    return canvas, faces, {"lighting": lighting, "blurred": blurred, "faces": n}
