"""The image predictor rejects bad images and prompts with a PromptError that says what to fix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam2_web.errors import PromptError
from sam2_web.image_predictor import SAM2ImagePredictor

SIZE = 256  # a small model input keeps set_image cheap; validation does not depend on it


@pytest.fixture(scope="module")
def model():
    from sam2_web.build import build_sam2

    return build_sam2("sam2.1_hiera_t", None, device="cpu", hydra_overrides_extra=[f"++model.image_size={SIZE}"])


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ready(model, image):
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    return predictor


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(PromptError, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)  # callers written against the reference catch this
    return info.value


# ---------------------------------------------------------------- order of calls


def test_predict_before_set_image(model):
    predictor = SAM2ImagePredictor(model)
    _raises(r"call set_image\(image\) before predict\(\)", predictor.predict,
            point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1]))
    _raises(r"before get_image_embedding\(\)", predictor.get_image_embedding)


def test_predict_batch_needs_image_batch(ready):
    _raises(r"predict_batch\(\) needs set_image_batch", ready.predict_batch,
            point_coords_batch=[np.array([[1.0, 2.0]])], point_labels_batch=[np.array([1])])


def test_reset_forgets_the_image(model, image):
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    predictor.reset_predictor()
    _raises("before predict", predictor.predict, box=np.array([0.0, 0.0, 10.0, 10.0]))


# ---------------------------------------------------------------- images


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((48, 64), np.uint8), r"shape \(H, W, 3\) RGB, got \(48, 64\) \(grayscale"),
        (np.zeros((48, 64, 4), np.uint8), r"got \(48, 64, 4\) \(RGBA\? drop the alpha"),
        (np.zeros((48, 64, 3), np.float32), r"must be uint8 with values 0\.\.255, got dtype float32"),
        (np.zeros((0, 64, 3), np.uint8), r"is empty"),
        ([[1, 2, 3]], r"numpy array or a PIL image, got list"),
    ],
    ids=["2-D", "4 channels", "float", "empty", "list"],
)
def test_bad_image(model, image, bad, match):
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    _raises(match, predictor.set_image, bad)
    # A rejected image leaves the previous one in place.
    masks, _, _ = predictor.predict(box=np.array([5.0, 5.0, 40.0, 30.0]))
    assert masks.shape[-2:] == image.shape[:2]


def test_bad_image_in_batch_names_its_index(model, image):
    predictor = SAM2ImagePredictor(model)
    _raises(r"image_list\[1\] must be uint8", predictor.set_image_batch, [image, image.astype(np.float64)])
    _raises("non-empty list", predictor.set_image_batch, [])


def test_pil_images_are_accepted_and_converted(model, image):
    predictor = SAM2ImagePredictor(model)
    rgba = Image.fromarray(image).convert("RGBA")
    predictor.set_image(rgba)
    masks, scores, _ = predictor.predict(point_coords=np.array([[10.0, 20.0]]), point_labels=np.array([1]))
    assert masks.shape == (3, 48, 64) and scores.shape == (3,)


# ---------------------------------------------------------------- prompts


def test_empty_prompt(ready):
    _raises(r"no prompt given: pass point_coords \+ point_labels, a box, or a mask_input", ready.predict)


def test_labels_without_points_and_points_without_labels(ready):
    _raises("point_labels given without point_coords", ready.predict, point_labels=np.array([1]))
    _raises("point_labels is missing", ready.predict, point_coords=np.array([[1.0, 2.0]]))


@pytest.mark.parametrize(
    "coords",
    [np.array([1.0, 2.0]), np.zeros((2, 3)), np.zeros((1, 2, 2, 2))],
    ids=["1-D", "3 columns", "4-D"],
)
def test_points_of_wrong_shape(ready, coords):
    _raises(r"point_coords must have shape \(N, 2\) or \(B, N, 2\)", ready.predict,
            point_coords=coords, point_labels=np.ones(coords.size // 2 or 1))


def test_label_count_differs_from_point_count(ready):
    _raises(
        "point_labels has 3 entries but point_coords has 2 points; give exactly one label per point",
        ready.predict, point_coords=np.array([[1.0, 2.0], [3.0, 4.0]]), point_labels=np.array([1, 0, 1]),
    )


def test_label_shape_differs_from_points(ready):
    _raises(r"labels must have shape \(2, 1\)", ready.predict,
            point_coords=np.zeros((2, 1, 2)), point_labels=np.array([1, 1]))


@pytest.mark.parametrize("labels,shown", [([1, 2], r"\[2\.0\]"), ([-1, 1], r"\[-1\.0\]")])
def test_labels_must_be_0_or_1(ready, labels, shown):
    _raises(r"point_labels must be 1 \(object\) or 0 \(background\), got " + shown, ready.predict,
            point_coords=np.array([[1.0, 2.0], [3.0, 4.0]]), point_labels=np.array(labels))


def test_no_points(ready):
    _raises("point_coords has no points", ready.predict, point_coords=np.zeros((0, 2)), point_labels=np.zeros(0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(ready, bad):
    _raises("point_coords contains NaN or infinite values", ready.predict,
            point_coords=np.array([[1.0, bad]]), point_labels=np.array([1]))
    _raises("box contains NaN or infinite values", ready.predict, box=np.array([0.0, 0.0, bad, 10.0]))


@pytest.mark.parametrize("box", [np.zeros(3), np.zeros((2, 2)), np.zeros((1, 2, 4)), np.zeros((0, 4))],
                         ids=["3 values", "2x2", "3-D", "no rows"])
def test_box_of_wrong_shape(ready, box):
    _raises(r"box must have shape \(4,\) or \(B, 4\) as x0, y0, x1, y1", ready.predict, box=box)


def test_box_corners_swapped(ready):
    _raises(r"box \[30\.0, 5\.0, 10\.0, 20\.0\] has x1 < x0 or y1 < y0; give the top-left corner first",
            ready.predict, box=np.array([30.0, 5.0, 10.0, 20.0]))
    _raises("has x1 < x0 or y1 < y0", ready.predict,
            box=np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 20.0, 10.0, 5.0]]))


@pytest.mark.parametrize("shape", [(SIZE // 4, SIZE // 4), (1, 1, 32, 32), (2, SIZE // 4, SIZE // 4), (1, 2, SIZE // 4, SIZE // 4)])
def test_mask_input_of_wrong_shape(ready, shape):
    side = SIZE // 4
    _raises(rf"mask_input must have shape \(1, {side}, {side}\) or \(B, 1, {side}, {side}\)",
            ready.predict, mask_input=np.zeros(shape, np.float32))


def test_prompt_batches_that_disagree(ready):
    _raises("prompt batch sizes disagree", ready.predict,
            point_coords=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1)), box=np.tile([0.0, 0.0, 9.0, 9.0], (3, 1)))


def test_predict_batch_list_lengths(model, image):
    predictor = SAM2ImagePredictor(model)
    predictor.set_image_batch([image, image])
    _raises("box_batch has 1 entries but 2 images are set", predictor.predict_batch,
            box_batch=[np.array([0.0, 0.0, 5.0, 5.0])])


def test_valid_prompts_after_errors(ready):
    """Rejected prompts leave the predictor usable, and a shared click broadcasts over boxes."""
    with pytest.raises(PromptError):
        ready.predict(box=np.array([5.0, 5.0, 1.0, 1.0]))
    masks, scores, low = ready.predict(
        point_coords=np.array([[20.0, 20.0]]), point_labels=np.array([1]),
        box=np.array([[5.0, 5.0, 40.0, 30.0], [0.0, 0.0, 60.0, 45.0]]), multimask_output=False,
    )
    assert masks.shape == (2, 1, 48, 64) and scores.shape == (2, 1) and low.shape == (2, 1, SIZE // 4, SIZE // 4)
    assert set(np.unique(masks)) <= {0.0, 1.0}


def test_unknown_precision(model):
    with pytest.raises(ValueError, match="precision must be one of"):
        SAM2ImagePredictor(model, precision="fp8")
