"""The hooks.d definitions: which containers podman runs the hook for.

podman (containers/common pkg/hooks, 1.0.0 ``When.Match``) and CRI-O inject
a hook when, for every ``when.annotations`` pair, some annotation's key
matches the key pattern and its value the value pattern, each with Go's
``regexp.MatchString``: an unanchored search, RE2 syntax.  ``go_match``
does the same with Python's ``re.search``; for these patterns (``(?i)``,
``^``, ASCII letters, ``-``, ``\\.``, ``.*``) the two agree, which
``test_case_folding_of_the_prefix_is_ascii_only`` pins down where they
could differ.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from wg_pod_hook import hooksd
from wg_pod_hook.errors import AnnotationError
from wg_pod_hook.model.oci import KEY_PATTERN, KNOWN, PREFIX, parse_annotations

REPO = Path(__file__).resolve().parents[2]

# Every definition the project ships or writes: the templates packages
# install (hooks.d/, any copy under packaging/) and what `wg-pod install` writes.
SHIPPED = sorted(REPO.glob("hooks.d/*.json")) + sorted(
    p for p in REPO.glob("packaging/**/*.json") if '"when"' in p.read_text()
)
DEFINITIONS: dict[str, dict[str, Any]] = {
    **{str(p.relative_to(REPO)): json.loads(p.read_text()) for p in SHIPPED},
    **{f"wg-pod install ({s})": hooksd.definition(s, "/x/wg-pod-hook") for s in hooksd.STAGES},
}

REACH_THE_HOOK = [
    {"wg-pod.config": "/etc/wg/wg0.conf"},
    {"wg-pod.confg": "/etc/wg/wg0.conf"},  # a typo
    {"wg-pod.config": ""},  # empty
    {"wg-pod.Config": "/etc/wg/wg0.conf"},  # case
    {"WG-POD.CONFIG": "/etc/wg/wg0.conf"},
    {"wg-pod.interface": "wg1"},  # no config key at all
    {"wg-pod.": ""},
    {"wg-pod.config": "line\nbreak"},
    {"io.podman.x": "y", "wg-pod.dns": "off"},
]
LEFT_ALONE = [
    {},
    {"io.podman.x": "y"},
    {"io.podman.annotations.label": "wg-pod.config=/etc/wg/wg0.conf"},
    {"x.wg-pod.config": "/etc/wg/wg0.conf"},
    {" wg-pod.config": "/etc/wg/wg0.conf"},
    {"wg-pod": "/etc/wg/wg0.conf"},
    {"wg-podXconfig": "/etc/wg/wg0.conf"},
    {"wg_pod.config": "/etc/wg/wg0.conf"},
]


def go_match(definition: dict[str, Any], annotations: dict[str, str]) -> bool:
    """containers/common's When.Match for a ``when`` of annotations only."""
    when = definition["when"]
    assert set(when) == {"annotations"}, "only annotations decide"
    return all(
        any(re.search(kp, k) and re.search(vp, v) for k, v in annotations.items())
        for kp, vp in when["annotations"].items()
    )


def test_every_definition_is_found() -> None:
    assert [p.name for p in SHIPPED[:2]] == [hooksd.file_name(s) for s in sorted(hooksd.STAGES)]
    assert len(DEFINITIONS) >= 4


@pytest.mark.parametrize("where", sorted(DEFINITIONS))
@pytest.mark.parametrize("annotations", REACH_THE_HOOK, ids=repr)
def test_any_wg_pod_key_reaches_the_hook(where: str, annotations: dict[str, str]) -> None:
    assert go_match(DEFINITIONS[where], annotations)


@pytest.mark.parametrize("where", sorted(DEFINITIONS))
@pytest.mark.parametrize("annotations", LEFT_ALONE, ids=repr)
def test_other_containers_never_run_the_hook(where: str, annotations: dict[str, str]) -> None:
    assert not go_match(DEFINITIONS[where], annotations)


@pytest.mark.parametrize("annotations", REACH_THE_HOOK + LEFT_ALONE, ids=repr)
def test_the_hook_refuses_nothing_it_is_not_sent_and_ignores_nothing_it_is(
    annotations: dict[str, str],
) -> None:
    """What the definitions send is exactly what parse_annotations calls its
    own: a key it would ignore never triggers the hook, and a key that
    triggers it is either valid or refused."""
    sent = go_match(hooksd.definition("createRuntime", "/x/wg-pod-hook"), annotations)
    if not sent:
        with pytest.raises(AnnotationError, match=r"wg-pod\.config: missing"):
            parse_annotations(annotations)
        return
    ours = {k: v for k, v in annotations.items() if k.lower().startswith(PREFIX)}
    assert ours
    valid = "wg-pod.config" in ours and all(
        k in KNOWN and v.strip() and v.isprintable() for k, v in ours.items()
    )
    if valid:
        parse_annotations(annotations)
    else:
        with pytest.raises(AnnotationError):
            parse_annotations(annotations)


def test_the_definitions_use_the_parsers_pattern() -> None:
    for where, definition in DEFINITIONS.items():
        assert definition["when"]["annotations"] == {KEY_PATTERN: ".*"}, where


def test_case_folding_of_the_prefix_is_ascii_only() -> None:
    """Go's (?i) folds a letter to its simple case-folding orbit (``k`` also
    to the Kelvin sign, ``s`` to the long s); Python's re.IGNORECASE does the
    same for str patterns.  No letter of ``wg-pod`` has a non-ASCII member,
    so ``(?i)^wg-pod\\.`` and a check of ``key[:7].lower()`` agree in both."""
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    for letter in "wgpod":
        assert set(re.findall(f"(?i){letter}", everything)) == {letter, letter.upper()}
