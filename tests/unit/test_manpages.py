"""The man pages in docs/, rendered with scdoc as ``make man`` renders
them: each renders, has the sections a reader looks for, wg-pod(8) has an
entry for every subcommand of ``cli.parser()`` naming its options, and
neither page sends the reader to the README (an installed man page has
none beside it)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wg_pod_hook import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = {"wg-pod.8": DOCS / "wg-pod.8.scd", "wg-pod.yaml.5": DOCS / "wg-pod.yaml.5.scd"}
SECTIONS = {
    "wg-pod.8": [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "OPTIONS",
        "HEALTH STATES",
        "JSON OUTPUT",
        "FILES",
        "ENVIRONMENT",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ],
    "wg-pod.yaml.5": ["NAME", "SYNOPSIS", "DESCRIPTION", "KEYS", "FILES", "ENVIRONMENT"],
}
# Each --json gets its part of JSON OUTPUT.
JSON_COMMANDS = ("status", "health", "check", "doctor")
# Options documented once for every subcommand (OPTIONS), not in each entry.
EVERYWHERE = {"--debug", "--help"}


def render(page: str) -> str:
    scdoc = shutil.which("scdoc")
    if scdoc is None:
        pytest.skip("scdoc is not installed (Debian package scdoc): the man pages are not rendered")
    done = subprocess.run(
        [scdoc], stdin=PAGES[page].open(), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"scdoc {PAGES[page].name}: {done.stderr.strip()}"
    return done.stdout


def plain(roff: str) -> str:
    """Roff text without font changes and zero-width escapes."""
    return re.sub(r"\\f[BIRP]|\\&", "", roff)


def sections(roff: str, macro: str = ".SH") -> dict[str, str]:
    """Each section's (or with ``.SS``, subsection's) roff text by title."""
    found: dict[str, str] = {}
    title = None
    for line in roff.splitlines():
        if line.startswith((".SH ", ".SS ")):
            if line.startswith(macro + " "):
                title = line[len(macro) + 1 :].strip().strip('"')
                found[title] = ""
                continue
            if macro == ".SS" and line.startswith(".SH "):
                title = None
                continue
        if title is not None:
            found[title] += line + "\n"
    return found


def entries(section: str) -> dict[str, str]:
    """The tagged entries of a section (scdoc's term line, then an indented
    body between ``.RS 4`` and ``.RE``), by the first word of the term."""
    lines = section.splitlines()
    found: dict[str, str] = {}
    for i, line in enumerate(lines[:-1]):
        if lines[i + 1] == ".RS 4" and not line.startswith("."):
            body = []
            for rest in lines[i + 2 :]:
                if rest == ".RE":
                    break
                body.append(rest)
            word = plain(line).split()[0]
            found[word] = plain(line + "\n" + "\n".join(body))
    return found


def subcommands() -> dict[str, argparse.ArgumentParser]:
    top = cli.parser()
    (found,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found.choices)


@pytest.mark.parametrize("page", PAGES)
def test_the_page_renders_with_its_sections(page: str) -> None:
    titles = list(sections(render(page)))
    missing = [title for title in SECTIONS[page] if title not in titles]
    assert missing == [], f"{page}: sections missing: {missing} (has {titles})"


@pytest.mark.parametrize("page", PAGES)
def test_the_page_does_not_send_the_reader_to_the_readme(page: str) -> None:
    """An installed man page has no README beside it: it says the format
    itself, or names the other page."""
    text = PAGES[page].read_text()
    assert "readme" not in text.lower()


def test_every_subcommand_has_an_entry_with_its_options() -> None:
    roff = render("wg-pod.8")
    commands = entries(sections(roff)["COMMANDS"])
    missing = sorted(set(subcommands()) - set(commands))
    assert missing == [], f"wg-pod.8 COMMANDS: no entry for {missing}"
    undocumented = {}
    for name, sub in subcommands().items():
        options = {
            s
            for action in sub._actions
            for s in action.option_strings
            if s.startswith("--") and s not in EVERYWHERE
        }
        absent = sorted(o for o in options if not re.search(rf"{o}(?![\w-])", commands[name]))
        if absent:
            undocumented[name] = absent
    assert undocumented == {}, f"wg-pod.8 COMMANDS: options not in their entry: {undocumented}"


def test_every_subcommand_is_in_the_synopsis() -> None:
    synopsis = plain(sections(render("wg-pod.8"))["SYNOPSIS"])
    missing = [
        name for name in subcommands() if not re.search(rf"\bwg-pod\b.*\b{name}\b", synopsis)
    ]
    assert missing == []


def test_options_for_every_subcommand_are_in_options() -> None:
    options = entries(sections(render("wg-pod.8"))["OPTIONS"])
    assert {"--debug", "--version", "--json", "--url"} <= set(options)


def test_every_json_output_is_described() -> None:
    roff = render("wg-pod.8")
    described = sections(roff, ".SS")
    for name in JSON_COMMANDS:
        assert f"{name} --json" in described, name
    with_json = sorted(
        name
        for name, sub in subcommands().items()
        if any("--json" in action.option_strings for action in sub._actions)
    )
    assert [name for name in with_json if f"{name} --json" not in described] == []


def test_the_examples_have_titles() -> None:
    """EXAMPLES: one subsection per example, each with its commands."""
    roff = render("wg-pod.8")
    body = sections(roff)["EXAMPLES"]
    titles = re.findall(r"^\.SS (.+)$", body, re.M)
    for wanted in (
        "Check a config before using it",
        "Run a container on the tunnel",
        "Verify the tunnel",
        "Join a running container",
        "Reload after editing a config",
        "Find leftovers",
    ):
        assert wanted in titles
    for title, text in sections(roff, ".SS").items():
        if title in titles:
            assert ".nf" in text, f"example {title!r} shows no command"


def test_the_health_states_are_the_codes() -> None:
    """HEALTH STATES names every state health.py has, each with its meaning."""
    from wg_pod_hook.state.health import State

    states = entries(sections(render("wg-pod.8"))["HEALTH STATES"])
    assert sorted(states) == sorted(s.value for s in State)
    for state in State:
        assert ("(healthy)" in states[state.value]) == state.healthy, state


def test_exit_status_has_an_entry_for_each_command_with_its_own() -> None:
    exits = entries(sections(render("wg-pod.8"))["EXIT STATUS"])
    for name in ("check", "status", "reload", "health", "doctor", "daemon", "wg-pod-hook"):
        assert name in exits, name


def test_the_environment_names_what_the_code_reads() -> None:
    """Each variable wg-pod reads (the names the code defines) is in
    ENVIRONMENT of wg-pod(8); WG_POD_SETTINGS in wg-pod.yaml(5) too."""
    from wg_pod_hook import logs, podman, runtime

    env = entries(sections(render("wg-pod.8"))["ENVIRONMENT"])
    for name in (runtime.SETTINGS_ENV, runtime.STATE_DIR_ENV, podman.URL_ENV, logs.SOCKET_ENV):
        assert name in env, name
    assert runtime.SETTINGS_ENV in entries(sections(render("wg-pod.yaml.5"))["ENVIRONMENT"])


def test_the_files_are_the_codes_paths() -> None:
    """FILES names the paths the code uses: state, settings, hooks.d, CDI
    spec, the daemon's unit."""
    from wg_pod_hook import cdi, hooksd, runtime, units

    files = plain(sections(render("wg-pod.8"))["FILES"])
    for path in (
        runtime.DEFAULT_STATE_DIR,
        runtime.DEFAULT_SETTINGS,
        str(hooksd.DEFAULT_DIR),
        str(cdi.DEFAULT_SPEC),
        f"{units.ADMIN_DIR}/{units.NAME}",
        *runtime.DEFAULT_CONFIG_DIRS,
    ):
        assert path in files, path
    yaml_files = plain(sections(render("wg-pod.yaml.5"))["FILES"])
    assert runtime.DEFAULT_SETTINGS in yaml_files
