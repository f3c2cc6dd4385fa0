"""Image answers are memoised per config: the same answers, computed once, bounded."""

from __future__ import annotations

from devenv.support.configs import sample_config
from devenv.support.reviews import make_pod
from webhook.admission.needs import MATCH_CACHE_SIZE, match_image, match_images, pull_needs


def test_image_answers_are_memoised_per_config_and_match_a_fresh_computation() -> None:
    first, second = sample_config(), sample_config()
    image = "contoso.azurecr.io/app:1"
    [a] = match_images(first, [image])
    [again] = match_images(first, [image])
    [other] = match_images(second, [image])
    assert again is a  # answered from the first config's memo
    assert other is not a  # another config object has its own
    assert a == match_image(first, image) == other


def test_per_pod_identity_answers_are_kept_per_service_account() -> None:
    config = sample_config()
    image = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app:1"
    [a] = match_images(config, [image], "builder")
    [b] = match_images(config, [image], "runner")
    assert a.need is not None and b.need is not None
    assert a.need.secret_name != b.need.secret_name


def test_the_memo_is_bounded_and_forgets_the_oldest_answer_first() -> None:
    config = sample_config()
    images = [f"contoso.azurecr.io/app:{i}" for i in range(MATCH_CACHE_SIZE + 1)]
    matches = match_images(config, images)
    assert all(m.need is not None for m in matches)
    [newest] = match_images(config, images[-1:])
    [oldest] = match_images(config, images[:1])
    assert newest is matches[-1]
    assert oldest is not matches[0]
    assert oldest == matches[0]


def test_a_pod_with_the_same_images_gets_the_same_needs_without_recomputing() -> None:
    config = sample_config()
    pod = make_pod("contoso.azurecr.io/app:1", "contoso.azurecr.io/side:2", "nginx")
    first = pull_needs(config, pod)
    again = pull_needs(config, make_pod(*[c["image"] for c in pod["spec"]["containers"]]))
    assert again == first
    assert all(a is b for a, b in zip(again, first, strict=True))
    [need] = first
    assert need.images == ("contoso.azurecr.io/app:1", "contoso.azurecr.io/side:2")
