import cv2
import numpy as np

from facegate.models.alignment import ARCFACE_TEMPLATE, align_face, similarity_transform
from facegate.models.quality import estimate_pose


def _apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


def test_similarity_recovers_a_known_transform():
    angle, scale, t = np.radians(17), 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(0).uniform(0, 200, (5, 2))
    dst = src @ rot.T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_similarity_has_no_shear_and_maps_template_to_itself():
    m = similarity_transform(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    noisy = ARCFACE_TEMPLATE * 2.3 + np.random.default_rng(1).normal(0, 2, (5, 2)) + 40
    a = similarity_transform(noisy, ARCFACE_TEMPLATE)[:, :2]
    # a similarity is a scaled rotation: equal column norms, orthogonal columns
    assert abs(np.linalg.norm(a[:, 0]) - np.linalg.norm(a[:, 1])) < 1e-9
    assert abs(a[:, 0] @ a[:, 1]) < 1e-9


def test_reflection_is_not_used_to_fit_mirrored_points():
    mirrored = ARCFACE_TEMPLATE * [-1, 1] + [112, 0]
    m = similarity_transform(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_align_face_puts_landmarks_on_the_template():
    img = np.zeros((300, 300, 3), np.uint8)
    pts = ARCFACE_TEMPLATE * 1.9 + [60, 40]
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    crop = align_face(img, pts)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert crop[int(round(y)), int(round(x))].max() > 200


def test_pose_estimate_is_frontal_on_the_template_and_sees_roll():
    yaw, pitch, roll = estimate_pose(ARCFACE_TEMPLATE)
    assert abs(yaw) < 2 and abs(pitch) < 2 and abs(roll) < 1
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    rolled = (ARCFACE_TEMPLATE - 56) @ np.array([[c, -s], [s, c]]).T + 56
    assert abs(estimate_pose(rolled)[2] - 20) < 0.5
    turned = ARCFACE_TEMPLATE.copy()
    turned[2, 0] += 12           # nose towards the right eye
    assert estimate_pose(turned)[0] > 20
