"""The documentation in the tree (issue 8, finding 11): the man pages
render without warnings and `make install` puts them in place, every
program answers --help and --version, no file cites the design notes that
live outside the repository, and every "docs/design.md §N" citation names
a section that docs/design.md has.
"""

import os
import re
import subprocess

import pytest

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PAGES = ("sdpsd.8", "sdps-ctl.8", "sdps-deliver.8", "sdps-smtp.8",
         "sdps.conf.5")
PROGRAMS = ("sdpsd", "sdps-ctl", "sdps-deliver", "sdps-smtp")
EX_USAGE = 64
# Assembled so this file does not cite them itself.
OUTSIDE = ("DESIGN" + ".md", "STYLE" + ".md")
SKIP_DIRS = {".git", "build", "run", "__pycache__", ".pytest_cache"}


def run(argv, **kw):
    return subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120, **kw)


def tree_files():
    """Every file of the tree but .git, build output and docs/notes."""
    for top, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(top, ROOT)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and
                         os.path.join(rel, d) not in
                         ("docs/notes", "./docs/notes"))
        for f in sorted(files):
            yield os.path.join(top, f)


def read_text(path):
    with open(path, "rb") as fp:
        data = fp.read()
    if b"\0" in data:
        return None
    return data.decode("utf-8", "replace")


# ---- man pages ----

@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page):
    path = os.path.join(ROOT, "man", page)
    assert os.path.isfile(path), "missing man page %s" % page
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat",
               PAGER="cat")
    r = run(["man", "--warnings=w", "-l", path], env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr.decode() == "", r.stderr.decode()
    text = r.stdout.decode()
    assert "NAME" in text and "SYNOPSIS" in text or page.endswith(".5")
    # groff itself, every warning enabled, as a second opinion.
    r = run(["groff", "-man", "-ww", "-z", path])
    assert r.returncode == 0 and r.stderr.decode() == "", r.stderr.decode()


def test_conf_page_documents_every_key():
    """sdps.conf.5 names every key config/sdps.conf shows."""
    with open(os.path.join(ROOT, "config", "sdps.conf")) as fp:
        keys = set(re.findall(r"^;?([a-z_0-9]+)\s*=", fp.read(), re.M))
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8")
    text = run(["man", "-l", os.path.join(ROOT, "man", "sdps.conf.5")],
               env=env).stdout.decode()
    text = re.sub(r".\x08", "", text)
    missing = sorted(k for k in keys if not re.search(r"\b%s\b" % k, text))
    assert keys and not missing, missing


def test_make_install_puts_the_pages_in_place(tmp_path):
    dest = tmp_path / "dest"
    r = run(["make", "-s", "-C", ROOT, "install", "DESTDIR=%s" % dest,
             "PREFIX=/usr/local", "BUILD=%s" % harness.bin_dir()])
    assert r.returncode == 0, r.stderr.decode()
    for page in PAGES:
        sect = page.rsplit(".", 1)[1]
        p = dest / "usr/local/share/man" / ("man" + sect) / page
        assert p.is_file(), "not installed: %s" % p
        assert p.read_bytes() == open(os.path.join(ROOT, "man", page),
                                      "rb").read()
        assert (p.stat().st_mode & 0o777) == 0o644


# ---- --help and --version ----

@pytest.mark.parametrize("prog", PROGRAMS)
def test_help(prog):
    r = run([harness.binary(prog), "--help"])
    assert r.returncode == 0, r
    out = r.stdout.decode()
    assert out.startswith("usage: " + prog), out
    assert r.stderr == b""


@pytest.mark.parametrize("prog", PROGRAMS)
def test_version(prog):
    r = run([harness.binary(prog), "--version"])
    assert r.returncode == 0, r
    out = r.stdout.decode()
    assert re.fullmatch(r"%s \(sdps\) \d+\.\d+(\.\d+)?\S*\n" %
                        re.escape(prog), out), out
    assert r.stderr == b""


def test_one_version_everywhere():
    versions = {run([harness.binary(p), "--version"]).stdout.split()[-1]
                for p in PROGRAMS}
    assert len(versions) == 1, versions


@pytest.mark.parametrize("prog", PROGRAMS)
def test_bad_option_is_usage_on_stderr(prog):
    r = run([harness.binary(prog), "--no-such-option"])
    assert r.returncode == EX_USAGE, r
    assert b"usage: " + prog.encode() in r.stderr, r.stderr
    assert r.stdout == b""


# ---- citations ----

def test_nothing_cites_notes_outside_the_tree():
    hits = []
    for path in tree_files():
        text = read_text(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if any(o in line for o in OUTSIDE):
                hits.append("%s:%d: %s" % (os.path.relpath(path, ROOT), n,
                                           line.strip()))
    assert not hits, "\n".join(hits)


def design_sections():
    with open(os.path.join(ROOT, "docs", "design.md")) as fp:
        text = fp.read()
    return set(re.findall(r"^#+ §(\d+(?:\.\d+)*)[ .]", text, re.M))


def test_design_citations_name_real_sections():
    sections = design_sections()
    assert {"1", "2", "3"} <= sections, sorted(sections)
    cite = re.compile(r"docs/design\.md((?:,? ?§\d+(?:\.\d+)*)+)")
    bad, count = [], 0
    for path in tree_files():
        text = read_text(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in cite.finditer(line):
                for sec in re.findall(r"§(\d+(?:\.\d+)*)", m.group(1)):
                    count += 1
                    if sec not in sections:
                        bad.append("%s:%d: §%s" % (
                            os.path.relpath(path, ROOT), n, sec))
    assert count > 0, "no docs/design.md citation in the tree"
    assert not bad, "\n".join(bad)
