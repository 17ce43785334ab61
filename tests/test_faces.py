"""Face detection and cues on real photos that scikit-image ships (astronaut: NASA, public domain;
camera: the classic cameraman test image), run through LiteRT with MediaPipe's models."""

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from facellm.faces import FaceAnalyzer


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def cameraman():
    return Image.fromarray(skimage.data.camera()).convert("RGB")


def test_astronaut_one_face_box_landmarks_and_cues(analyzer, astronaut):
    faces = analyzer.analyze(astronaut)
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = np.array(face.box) / 512
    # measured by hand on the photo: the face spans x 0.34-0.54, y 0.14-0.35
    assert x0 == pytest.approx(0.34, abs=0.03) and x1 == pytest.approx(0.54, abs=0.03)
    assert y0 == pytest.approx(0.14, abs=0.03) and y1 == pytest.approx(0.35, abs=0.03)
    assert face.score > 0.8
    right_eye, left_eye, nose = face.keypoints[:3]
    assert right_eye[0] < nose[0] < left_eye[0] and nose[1] > right_eye[1]
    assert face.landmarks.shape == (468, 3)
    inside = ((face.landmarks[:, 0] >= face.box[0] - 5) & (face.landmarks[:, 0] <= face.box[2] + 5)
              & (face.landmarks[:, 1] >= face.box[1] - 30) & (face.landmarks[:, 1] <= face.box[3] + 5))
    assert inside.mean() > 0.95
    cues = face.cues
    assert abs(cues["yaw"]) < 15 and abs(cues["roll"]) < 10 and abs(cues["pitch"]) < 20  # a near-frontal portrait
    assert 0.15 < cues["eye_openness"] < 0.6  # eyes open
    assert cues["smile"] > 0.03  # she smiles: mouth corners above the middle of the lips
    assert cues["face_area_fraction"] == pytest.approx(0.042, abs=0.01)
    assert cues["blur_laplacian_var"] > 100 and 60 < cues["brightness"] < 220


def test_mirroring_mirrors_the_box_and_the_roll(analyzer, astronaut):
    face, = analyzer.analyze(astronaut)
    mirrored, = analyzer.analyze(ImageOps.mirror(astronaut))
    assert mirrored.box[0] == pytest.approx(512 - face.box[2], abs=4)
    assert mirrored.box[2] == pytest.approx(512 - face.box[0], abs=4)
    assert np.sign(mirrored.cues["roll"]) == -np.sign(face.cues["roll"])


def test_a_turned_head_gives_a_large_yaw_whose_sign_follows_the_turn(analyzer, cameraman):
    face, = analyzer.analyze(cameraman)
    # the cameraman's nose sits right of his eyes' midpoint: turned toward the image's right
    nose_x, eyes_mid_x = face.landmarks[1, 0], face.landmarks[[33, 263], 0].mean()
    assert nose_x > eyes_mid_x
    assert face.cues["yaw"] > 30
    mirrored, = analyzer.analyze(ImageOps.mirror(cameraman))
    assert mirrored.cues["yaw"] < -30


def test_no_face_in_a_cat_or_a_cup(analyzer):
    assert analyzer.analyze(Image.fromarray(skimage.data.chelsea())) == []
    assert analyzer.analyze(Image.fromarray(skimage.data.coffee())) == []


def test_two_faces_in_one_image(analyzer, astronaut):
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(ImageOps.mirror(astronaut), (512, 0))
    faces = analyzer.analyze(pair)
    assert len(faces) == 2
    assert sorted(f.box[0] < 512 for f in faces) == [False, True]
    assert all(f.landmarks is not None and "yaw" in f.cues for f in faces)


def test_faces_that_fill_the_frame_are_found_only_when_the_image_is_said_to_be_aligned(analyzer):
    from bad_inputs import CAT, tight_crop

    for inset, mirror, found_by in ((0.05, False, "short_range"), (0.15, True, "face_mesh")):
        crop = tight_crop(inset, mirror)  # 100x100, inside the full-range detector's own box
        assert analyzer.analyze(crop) == []  # the full-range detector misses faces that fill the frame
        face, = analyzer.analyze(crop, aligned=True)
        assert face.found_by == found_by and face.landmarks.shape == (468, 3)
        x0, y0, x1, y1 = face.box
        assert min(x1 - x0, y1 - y0) >= 80 and 0 <= x0 and x1 <= 100 and 0 <= y0 and y1 <= 100
        assert abs(face.cues["yaw"]) < 15 and face.cues["smile"] > 0.03 and face.cues["face_width_px"] >= 80
    cat_face = CAT.crop((100, 20, 300, 220)).resize((100, 100))
    assert analyzer.short_range(cat_face)  # the short-range model alone takes a cat's face for a person's ...
    assert analyzer.analyze(cat_face, aligned=True) == []  # ... the face mesh does not
    assert analyzer.analyze(Image.fromarray(skimage.data.coffee()).resize((100, 100)), aligned=True) == []
