"""Settings refuse values outside their closed vocabularies, and the vocabularies agree with the
code that implements them."""
import pytest

from facegate import vocab
from facegate.config import Settings


@pytest.mark.parametrize("name, value", [("index_kind", "ivf_flat"), ("cert_period", "week")])
def test_a_setting_outside_its_vocabulary_is_refused(name, value):
    with pytest.raises(ValueError, match=f"FACEGATE_{name.upper()}"):
        Settings.load(**{name: value})


def test_the_vocabularies_match_their_implementations():
    from facegate.gallery.vectors import KINDS
    from facegate.service.auth import PERMISSIONS
    assert set(KINDS) == set(vocab.INDEX_KINDS)
    assert set(PERMISSIONS) == set(vocab.ROLES)
