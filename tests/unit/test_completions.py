"""The shell completions in packaging/completions against the parser they
complete: every subcommand of ``cli.parser()`` and every long option of
each (``--help`` aside) must be offered by the bash, zsh and fish scripts,
where that subcommand's options are listed; so an option added to cli.py
fails here until the three scripts have it.  Then each script's syntax, with
its own shell where one is installed, and what bash and fish offer."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from wg_pod_hook import cli

COMPLETIONS = Path(__file__).resolve().parents[2] / "packaging" / "completions"
BASH = COMPLETIONS / "wg-pod.bash"
ZSH = COMPLETIONS / "_wg-pod"
FISH = COMPLETIONS / "wg-pod.fish"
TOP = "(top)"  # the options before the subcommand

# Being added to cli.py by issue 27 (``doctor``, ``--json`` on health and
# check, ``--debug`` on every subcommand): the scripts offer them already,
# so they are not "unknown to the parser" until then. Once cli.py has them
# this changes nothing: the parser's own options are required regardless.
ANNOUNCED_COMMANDS = {"doctor"}
ANNOUNCED_OPTIONS = {"health": {"--json"}, "check": {"--json"}, "doctor": {"--json"}}
ANNOUNCED_EVERYWHERE = {"--debug"}


# ---------------------------------------------------------------------------
# What the parser has
# ---------------------------------------------------------------------------


def subcommands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (found,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found.choices)


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        s
        for action in parser._actions
        for s in action.option_strings
        if s.startswith("--") and s != "--help"
    }


def parser_options() -> dict[str, set[str]]:
    """Each subcommand's long options, and the top level's under TOP."""
    top = cli.parser()
    options = {name: long_options(sub) for name, sub in subcommands(top).items()}
    options[TOP] = long_options(top)
    return options


def parser_choices() -> set[str]:
    """The fixed values of options and operands (``--kill-switch auto``,
    ``cdi generate``): each script offers them."""
    top = cli.parser()
    return {
        str(choice)
        for parser in [top, *subcommands(top).values()]
        for action in parser._actions
        if action.choices and not isinstance(action, argparse._SubParsersAction)
        for choice in action.choices
    }


# ---------------------------------------------------------------------------
# What each script offers, read from its own structure
# ---------------------------------------------------------------------------


def bash_options(text: str) -> dict[str, set[str]]:
    """``local commands="..."``, ``local top_opts="..."`` and the case arms
    ``join) opts="..." ;;``."""
    commands = re.search(r'local commands="([^"]*)"', text)
    top = re.search(r'local top_opts="([^"]*)"', text)
    assert commands and top, "wg-pod.bash: no commands= or top_opts= list"
    options: dict[str, set[str]] = {name: set() for name in commands[1].split()}
    options[TOP] = set(top[1].split())
    for labels, opts in re.findall(r'^\s*([\w|\s-]+)\)\s*opts="([^"]*)"', text, re.M):
        for label in labels.split("|"):
            options.setdefault(label.strip(), set()).update(opts.split())
    return options


ZSH_SPEC = re.compile(r"'(?:\*|\([^)]*\))?(--[\w-]+)=?\[")


def zsh_options(text: str) -> dict[str, set[str]]:
    """The ``commands=(...)`` list, the first ``_arguments -C`` (the top
    level), and the ``_arguments`` specs of each ``(join)`` ... ``;;`` arm
    of ``case $words[1] in`` (the subcommand)."""
    listed = re.search(r"commands=\((.*?)\n\s*\)", text, re.S)
    top = re.search(r"_arguments -C(.*?)'1:command:", text, re.S)
    arms = re.search(r"case \$words\[1\] in\n(.*?)^\s*esac", text, re.S | re.M)
    assert listed and top and arms, "_wg-pod: no commands=( ), _arguments -C or case $words[1]"
    options: dict[str, set[str]] = {
        name: set() for name in re.findall(r"^\s*'([\w-]+):", listed[1], re.M)
    }
    options[TOP] = set(ZSH_SPEC.findall(top[1]))
    for labels, body in re.findall(r"^\s*\(([\w|-]+)\)\s*\n(.*?)^\s*;;", arms[1], re.M | re.S):
        for label in labels.split("|"):
            options.setdefault(label, set()).update(ZSH_SPEC.findall(body))
    return options


def fish_options(text: str) -> dict[str, set[str]]:
    """``set -l commands ...``; ``complete`` lines: ``-a NAME`` and ``-l
    NAME`` before a subcommand (``not __fish_seen_subcommand_from
    $commands``), ``-l NAME`` with ``__fish_seen_subcommand_from A B``."""
    listed = re.search(r"^set -l commands (.*)$", text, re.M)
    assert listed, "wg-pod.fish: no set -l commands"
    every = listed[1].split()
    options: dict[str, set[str]] = {TOP: set()}
    for line in text.splitlines():
        if not line.startswith("complete -c wg-pod "):
            continue
        longs = {f"--{name}" for name in re.findall(r"\s-l\s+([\w-]+)", line)}
        condition = re.search(r"-n\s+(['\"])(.*?)\1", line)
        if condition is None:
            continue
        words = condition[2].replace("$commands", " ".join(every)).split()
        if words[:2] == ["not", "__fish_seen_subcommand_from"]:
            options[TOP] |= longs
            for name in re.findall(r"\s-a\s+([\w-]+)", line):
                options.setdefault(name, set())
        elif words[0] == "__fish_seen_subcommand_from":
            for name in words[1:]:
                options.setdefault(name, set()).update(longs)
    return options


SCRIPTS: dict[str, tuple[Path, Callable[[str], dict[str, set[str]]]]] = {
    "bash": (BASH, bash_options),
    "zsh": (ZSH, zsh_options),
    "fish": (FISH, fish_options),
}


@pytest.mark.parametrize("shell", SCRIPTS)
def test_every_subcommand_and_option_of_the_parser_is_offered(shell: str) -> None:
    path, read = SCRIPTS[shell]
    offered = read(path.read_text())
    wanted = parser_options()
    missing_commands = sorted(set(wanted) - set(offered))
    assert missing_commands == [], f"{path.name}: subcommands missing: {missing_commands}"
    missing = {
        name: sorted(options - offered[name])
        for name, options in wanted.items()
        if options - offered[name]
    }
    assert missing == {}, f"{path.name}: options missing (by subcommand): {missing}"


@pytest.mark.parametrize("shell", SCRIPTS)
def test_nothing_is_offered_that_the_parser_does_not_know(shell: str) -> None:
    """A renamed or removed option or subcommand leaves no stale completion
    behind (what issue 27 is adding to cli.py aside)."""
    path, read = SCRIPTS[shell]
    offered = read(path.read_text())
    wanted = parser_options()
    unknown_commands = sorted(set(offered) - set(wanted) - ANNOUNCED_COMMANDS)
    assert unknown_commands == [], f"{path.name}: not subcommands of wg-pod: {unknown_commands}"
    unknown = {}
    for name, options in offered.items():
        known = wanted.get(name, set()) | {"--help"}
        if name != TOP:
            known |= ANNOUNCED_EVERYWHERE | ANNOUNCED_OPTIONS.get(name, set())
        if options - known:
            unknown[name] = sorted(options - known)
    assert unknown == {}, f"{path.name}: options the parser does not have: {unknown}"


@pytest.mark.parametrize("shell", SCRIPTS)
def test_fixed_values_are_offered(shell: str) -> None:
    path, _ = SCRIPTS[shell]
    words = set(re.findall(r"[\w.-]+", path.read_text()))
    assert sorted(parser_choices() - words) == []


def test_the_readers_see_the_scripts_structure() -> None:
    """The readers above find what they look for (a reader that finds
    nothing would let every option through as missing, and the tests above
    would say so; this says where instead)."""
    for shell, (path, read) in SCRIPTS.items():
        offered = read(path.read_text())
        assert {"--debug", "--version"} <= offered[TOP], shell
        assert "--kill-switch" in offered["join"], shell
        assert "--url" in offered["reload"], shell
        assert "--settings" in offered["install"], shell


# ---------------------------------------------------------------------------
# Syntax, with each shell where it is installed
# ---------------------------------------------------------------------------


def shell_or_skip(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package {name}), so its script is not parsed")
    return found


@pytest.mark.parametrize(
    ("shell", "args", "path"),
    [
        ("bash", ["-n"], BASH),
        ("zsh", ["-n"], ZSH),
        ("fish", ["--no-execute"], FISH),
    ],
)
def test_the_script_parses(shell: str, args: list[str], path: Path) -> None:
    done = subprocess.run(
        [shell_or_skip(shell), *args, str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------
# What bash and fish offer (podman stood in for by a script)
# ---------------------------------------------------------------------------


@pytest.fixture
def fake_podman(tmp_path: Path) -> dict[str, str]:
    """An environment whose podman lists two containers, and a directory
    with a config in it (the current directory of the shells)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    podman = bin_dir / "podman"
    podman.write_text("#!/bin/sh\nprintf 'web\\ndb-1\\n'\n")
    podman.chmod(0o755)
    (tmp_path / "wg0.conf").write_text("")
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(tmp_path)}


BASH_CASES = {
    "wg-pod |": {"join", "status", "check", "health"},
    "wg-pod --d|": {"--debug"},
    "wg-pod join |": {"web", "db-1"},
    "wg-pod --debug join --url unix:///x web |": {"wg0.conf"},
    "wg-pod join --kill-switch |": {"auto", "on", "off"},
    "wg-pod status |": {"web", "db-1"},
    "wg-pod reload web |": {"web", "db-1"},
    "wg-pod cdi |": {"generate", "list"},
    "wg-pod check |": {"wg0.conf"},
    "wg-pod install --s|": {"--settings", "--systemd-dir"},
}


def not_offered(
    cases: dict[str, set[str]], argv: list[str], cwd: Path, env: dict[str, str]
) -> dict[str, str]:
    """Run a shell script that prints one line of offers per case, in
    order; the cases whose line lacks a word they want, with that line."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    got = dict(zip(cases, done.stdout.splitlines(), strict=True))
    return {case: got[case] for case, want in cases.items() if not want <= set(got[case].split())}


@pytest.mark.parametrize("with_bash_completion", [False, True])
def test_what_bash_offers(
    with_bash_completion: bool, fake_podman: dict[str, str], tmp_path: Path
) -> None:
    """The bash function, with bash-completion's helpers (as installed) and
    without them (bash alone)."""
    library = Path("/usr/share/bash-completion/bash_completion")
    if with_bash_completion and not library.exists():
        pytest.skip("bash-completion is not installed (Debian package bash-completion)")
    lines = [f"source {library}" if with_bash_completion else ":", f"source {BASH}"]
    lines.append(
        't() { COMP_LINE="$*"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
        "COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _wg_pod; "
        "printf '%s\\n' \"${COMPREPLY[*]}\"; }"
    )
    for case in BASH_CASES:
        words = case.rstrip("|").split(" ")
        lines.append("t " + " ".join(f"'{w}'" for w in words))
    argv = ["bash", "--norc", "--noprofile", "-c", "\n".join(lines)]
    assert not_offered(BASH_CASES, argv, tmp_path, fake_podman) == {}


FISH_CASES = {
    "wg-pod ": {"join", "status", "check", "health"},
    "wg-pod join ": {"web", "db-1"},
    "wg-pod join --url x web ": {"wg0.conf"},
    "wg-pod join --kill-switch ": {"auto", "on", "off"},
    "wg-pod health ": {"web", "db-1"},
    "wg-pod cdi ": {"generate", "list"},
    "wg-pod check ": {"wg0.conf"},
    "wg-pod status --": {"--json", "--url", "--debug"},
}


def test_what_fish_offers(fake_podman: dict[str, str], tmp_path: Path) -> None:
    fish = shell_or_skip("fish")
    script = [f"source {FISH}"]
    for case in FISH_CASES:
        script.append(
            f"complete -C '{case}' | string replace -r '\\t.*' '' | string join ' '; or echo"
        )
    argv = [fish, "--no-config", "-c", "\n".join(script)]
    assert not_offered(FISH_CASES, argv, tmp_path, fake_podman) == {}
