"""The bad-input matrix as files, shared by every entry point's tests (data build, captioning, ...).

Made from photos scikit-image ships (astronaut: NASA, public domain; a cat).
"""

import numpy as np
import skimage.data
from PIL import Image, ImageOps

ASTRONAUT = Image.fromarray(skimage.data.astronaut())
CAT = Image.fromarray(skimage.data.chelsea())


def save(image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def two_faces() -> Image.Image:
    pair = Image.new("RGB", (1024, 512))
    pair.paste(ASTRONAUT, (0, 0))
    pair.paste(ImageOps.mirror(ASTRONAUT), (512, 0))
    return pair


def crowd(columns: int = 5, rows: int = 2) -> Image.Image:
    """``columns x rows`` astronaut heads (every other one mirrored), 256 px each: one face per tile."""
    head = ASTRONAUT.crop((131, 25, 322, 216)).resize((256, 256))  # the face, with 1.8x its box around it
    image = Image.new("RGB", (256 * columns, 256 * rows))
    for k in range(columns * rows):
        image.paste(ImageOps.mirror(head) if k % 2 else head, ((k % columns) * 256, (k // columns) * 256))
    return image


def undecodable(expected: str | None) -> bool:
    """Whether a case's expected verdict (``bad_images``' values) means the file cannot be decoded at all:
    unreadable, or too large to decode. Every entry point refuses those; the rest it reads."""
    return expected is not None and (expected.startswith("image:") or expected == "image too large")


def bad_images(root):
    """The bad-input matrix as files in ``root``; value: the data pipeline's expected reject reason, or None
    (a record). Decode failures start with "image:", the two-face image is refused by one-face filters."""
    cases = {}
    good = save(ASTRONAUT, root / "good.jpg", quality=95).read_bytes()
    (root / "corrupt.jpg").write_bytes(good[:200] + b"\x00" * 500 + good[700:]); cases["corrupt.jpg"] = "image:"
    png = save(ASTRONAUT, root / "full.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 3]); cases["truncated.png"] = "image:"
    (root / "empty.jpg").write_bytes(b""); cases["empty.jpg"] = "image:"
    (root / "text.jpg").write_bytes(b"this is not an image"); cases["text.jpg"] = "image:"
    save(ASTRONAUT.convert("CMYK"), root / "cmyk.jpg"); cases["cmyk.jpg"] = None
    save(ASTRONAUT.convert("RGBA"), root / "alpha.png"); cases["alpha.png"] = None
    save(ASTRONAUT.convert("P"), root / "palette.png"); cases["palette.png"] = None
    sixteen = Image.fromarray((np.asarray(ASTRONAUT.convert("L"), dtype=np.uint16) * 257))
    save(sixteen, root / "sixteen.png"); cases["sixteen.png"] = None  # scaled to 8 bits (PIL alone clips it white)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    save(ASTRONAUT.rotate(90, expand=True), root / "rotated.jpg", exif=exif); cases["rotated.jpg"] = None
    frames = [ASTRONAUT, CAT]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    cases["animated.gif"] = None  # first frame
    Image.new("L", (12000, 9000)).save(root / "bomb.png"); cases["bomb.png"] = "image too large"
    save(CAT, root / "cat.jpg"); cases["cat.jpg"] = "no face found"
    save(Image.new("RGB", (8, 8), (200, 150, 120)), root / "tiny.png"); cases["tiny.png"] = "no face found"
    save(two_faces(), root / "two.jpg"); cases["two.jpg"] = "2 faces"
    save(crowd(), root / "ten.jpg"); cases["ten.jpg"] = "10 faces"
    return cases


ASTRONAUT_FACE = (174.3, 69.8, 279.4, 175.0)  # the full-range detector's own box around her face


def tight_crop(inset: float, mirror: bool = False, size: int = 100) -> Image.Image:
    """The astronaut's face cropped ``inset`` (a fraction of its side) inside the detector's own box, as aligned
    face sets ship them (RAF-DB's Image/aligned: 100x100), ``size`` px square; ``mirror``: the mirrored photo."""
    x0, y0, x1, y1 = ASTRONAUT_FACE
    dx, dy = inset * (x1 - x0), inset * (y1 - y0)
    crop = ASTRONAUT.crop((round(x0 + dx), round(y0 + dy), round(x1 - dx), round(y1 - dy))).resize((size, size))
    return ImageOps.mirror(crop) if mirror else crop


def post_chat(base_url: str, model: str, image_url: str, api_key: str | None = None, question: str = "Describe the face.",
              max_tokens: int = 8) -> tuple[int, dict]:
    """A raw ``POST /v1/chat/completions`` with one image: (status, JSON body), whatever the status."""
    import json
    import urllib.error
    import urllib.request

    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": question}]}]}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    request = urllib.request.Request(f"{base_url}/v1/chat/completions", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def data_url(path) -> str:
    import base64

    return f"data:image/{path.suffix[1:]};base64," + base64.b64encode(path.read_bytes()).decode()


def api_matrix(base_url: str, model: str, root, api_key: str | None = None) -> dict[str, str]:
    """The matrix (``bad_images(root)``) through a running API, whichever engine answers, as data URLs and as
    server paths (the server must allow ``root``): undecodable files get 400 ``invalid_image`` naming the
    part and the problem (no exception names), everything else 200; a path outside ``root`` and a remote URL
    are 400 too. Returns each answered case's answer to its data URL."""
    cases, answers = bad_images(root), {}
    for name, expected in cases.items():
        path = root / name
        for ref in (data_url(path), str(path)):
            status, body = post_chat(base_url, model, ref, api_key)
            if undecodable(expected):
                message = body["error"]["message"]
                assert status == 400 and body["error"]["code"] == "invalid_image", (name, status, body)
                assert message.startswith("messages[0].content[0].image_url: "), message
                assert ("too large" in message) == (name == "bomb.png"), message
                assert "Error" not in message and "Traceback" not in message, message
            else:
                assert status == 200, (name, status, body)
                if ref.startswith("data:"):
                    answers[name] = body["choices"][0]["message"]["content"]
    for outside in ("/etc/hostname", "http://example.com/face.jpg"):
        status, body = post_chat(base_url, model, outside, api_key)
        assert status == 400 and body["error"]["code"] == "invalid_image", (outside, body)
    return answers
