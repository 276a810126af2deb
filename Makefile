# Build and install wg-pod like a system component.
#
#   make                  man pages (scdoc)
#   make install          PREFIX=/usr/local (default) DESTDIR= for staging
#   make uninstall        same variables as install
#   make deb              Debian package in build/deb/ (dpkg-buildpackage)
#   make rpmspec-check    packaging/rpm/wg-pod.spec parses (rpmspec -P)
#
# Layout (PREFIX=/usr shown): /usr/bin/wg-pod, /usr/libexec/wg-pod/wg-pod-hook,
# /usr/lib/wg-pod (wg_pod_hook + the pyroute2 it needs, see
# packaging/vendor.txt), hook definitions in HOOKSDIR (podman's own
# directory whatever the PREFIX), the daemon's wg-pod.service in UNITDIR
# (not enabled: packages enable it), /etc/wg-pod/wg-pod.yaml (all commented;
# never overwritten), man pages, examples under DOCDIR, and the completions
# of bash (BASHCOMPDIR), zsh (ZSHCOMPDIR: site-functions by default; the
# Debian package passes /usr/share/zsh/vendor-completions, which Debian's zsh
# reads) and fish (FISHCOMPDIR), from packaging/completions.

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
LIBEXECDIR  ?= $(PREFIX)/libexec
PKGLIBDIR   ?= $(PREFIX)/lib/wg-pod
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/wg-pod
SYSCONFDIR  ?= /etc
HOOKSDIR    ?= /usr/share/containers/oci/hooks.d
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
PYTHON      ?= /usr/bin/python3
SCDOC       ?= scdoc
DESTDIR     ?=
DEBDIR      ?= build/deb

HOOK        := $(LIBEXECDIR)/wg-pod/wg-pod-hook
STAGES      := createRuntime poststop
MANPAGES    := build/man/wg-pod.8 build/man/wg-pod.yaml.5
VENDOR_DIR  := packaging/vendor
EXAMPLES    := packaging/quadlet/wg-pod-example.container packaging/quadlet/wg-pod-example.service \
               packaging/kube/wg-pod-example.yaml

.PHONY: all man vendor install install-lib install-vendor install-data uninstall \
        deb rpmspec-check clean

all: man

man: $(MANPAGES)

build/man/%: docs/%.scd
	@mkdir -p build/man
	$(SCDOC) < $< > $@.tmp && mv $@.tmp $@

# Pure-Python wheels, pinned with their hashes; needs PyPI once.
vendor: $(VENDOR_DIR)/.stamp

$(VENDOR_DIR)/.stamp: packaging/vendor.txt
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps \
	    --only-binary=:all: --require-hashes -r $< -d $(VENDOR_DIR)
	touch $@

install: man vendor install-lib install-vendor install-data

# The wg_pod_hook package, copied (pure Python; packages use their own build).
install-lib:
	cd wg_pod_hook && find . -name '*.py' -o -name py.typed | while read -r f; do \
	    install -D -m 0644 "$$f" "$(DESTDIR)$(PKGLIBDIR)/wg_pod_hook/$$f" || exit 1; done

install-vendor:
	@ls $(VENDOR_DIR)/*.whl >/dev/null 2>&1 || { echo "no wheels in $(VENDOR_DIR): run make vendor" >&2; exit 1; }
	install -d -m 0755 "$(DESTDIR)$(PKGLIBDIR)"
	for w in $(VENDOR_DIR)/*.whl; do $(PYTHON) -m zipfile -e "$$w" "$(DESTDIR)$(PKGLIBDIR)" || exit 1; done
	rm -rf "$(DESTDIR)$(PKGLIBDIR)/podman/tests"
	find "$(DESTDIR)$(PKGLIBDIR)" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +

install-data: man
	install -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(LIBEXECDIR)/wg-pod"
	sed -e 's|@NAME@|wg-pod|' -e 's|@FLAGS@|-I|' -e 's|@MODULE@|cli|' -e 's|@ENTRY@|main|' -e 's|@PKGLIBDIR@|$(PKGLIBDIR)|' \
	    packaging/launcher.in > "$(DESTDIR)$(BINDIR)/wg-pod"
	sed -e 's|@NAME@|wg-pod-hook|' -e 's|@FLAGS@|-IS|' -e 's|@MODULE@|hook|' -e 's|@ENTRY@|run|' -e 's|@PKGLIBDIR@|$(PKGLIBDIR)|' \
	    packaging/launcher.in > "$(DESTDIR)$(HOOK)"
	chmod 0755 "$(DESTDIR)$(BINDIR)/wg-pod" "$(DESTDIR)$(HOOK)"
	install -d -m 0755 "$(DESTDIR)$(HOOKSDIR)"
	for s in $(STAGES); do \
	    sed 's|@HOOK@|$(HOOK)|' hooks.d/wg-pod-$$s.json > "$(DESTDIR)$(HOOKSDIR)/wg-pod-$$s.json" \
	    && chmod 0644 "$(DESTDIR)$(HOOKSDIR)/wg-pod-$$s.json" || exit 1; done
	install -d -m 0755 "$(DESTDIR)$(UNITDIR)"
	PYTHONPATH=. $(PYTHON) -m wg_pod_hook.units "$(BINDIR)/wg-pod" > "$(DESTDIR)$(UNITDIR)/wg-pod.service"
	chmod 0644 "$(DESTDIR)$(UNITDIR)/wg-pod.service"
	install -D -m 0644 build/man/wg-pod.8 "$(DESTDIR)$(MANDIR)/man8/wg-pod.8"
	install -D -m 0644 build/man/wg-pod.yaml.5 "$(DESTDIR)$(MANDIR)/man5/wg-pod.yaml.5"
	test -e "$(DESTDIR)$(SYSCONFDIR)/wg-pod/wg-pod.yaml" || \
	    install -D -m 0644 packaging/wg-pod.yaml "$(DESTDIR)$(SYSCONFDIR)/wg-pod/wg-pod.yaml"
	install -d -m 0755 "$(DESTDIR)$(DOCDIR)/examples"
	install -m 0644 README.md "$(DESTDIR)$(DOCDIR)/README.md"
	install -m 0644 $(EXAMPLES) "$(DESTDIR)$(DOCDIR)/examples/"
	install -D -m 0644 packaging/completions/wg-pod.bash "$(DESTDIR)$(BASHCOMPDIR)/wg-pod"
	install -D -m 0644 packaging/completions/_wg-pod "$(DESTDIR)$(ZSHCOMPDIR)/_wg-pod"
	install -D -m 0644 packaging/completions/wg-pod.fish "$(DESTDIR)$(FISHCOMPDIR)/wg-pod.fish"

# Removes what install wrote; the settings file only when nobody edited it.
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/wg-pod" "$(DESTDIR)$(HOOK)"
	-rmdir "$(DESTDIR)$(LIBEXECDIR)/wg-pod"
	for s in $(STAGES); do rm -f "$(DESTDIR)$(HOOKSDIR)/wg-pod-$$s.json"; done
	-rmdir --ignore-fail-on-non-empty "$(DESTDIR)$(HOOKSDIR)" \
	    "$(DESTDIR)$(dir $(HOOKSDIR))" "$(DESTDIR)$(dir $(patsubst %/,%,$(dir $(HOOKSDIR))))"
	rm -f "$(DESTDIR)$(UNITDIR)/wg-pod.service"
	rm -rf "$(DESTDIR)$(PKGLIBDIR)" "$(DESTDIR)$(DOCDIR)"
	rm -f "$(DESTDIR)$(MANDIR)/man8/wg-pod.8" "$(DESTDIR)$(MANDIR)/man5/wg-pod.yaml.5"
	rm -f "$(DESTDIR)$(BASHCOMPDIR)/wg-pod" "$(DESTDIR)$(ZSHCOMPDIR)/_wg-pod" \
	    "$(DESTDIR)$(FISHCOMPDIR)/wg-pod.fish"
	if cmp -s packaging/wg-pod.yaml "$(DESTDIR)$(SYSCONFDIR)/wg-pod/wg-pod.yaml"; then \
	    rm -f "$(DESTDIR)$(SYSCONFDIR)/wg-pod/wg-pod.yaml"; \
	    rmdir --ignore-fail-on-non-empty "$(DESTDIR)$(SYSCONFDIR)/wg-pod"; \
	else echo "kept $(DESTDIR)$(SYSCONFDIR)/wg-pod/wg-pod.yaml (edited)"; fi

# Builds the binary package from a copy of the tree (packaging/debian as
# debian/), so the work tree stays as it is; the .deb lands in DEBDIR.
deb: vendor
	rm -rf "$(DEBDIR)" && mkdir -p "$(DEBDIR)/src"
	tar -c --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./debian \
	    --exclude='__pycache__' --exclude='*.egg-info' --exclude=./.mypy_cache \
	    --exclude=./.ruff_cache --exclude=./.pytest_cache . | tar -x -C "$(DEBDIR)/src"
	cp -r packaging/debian "$(DEBDIR)/src/debian"
	# Debian's own python3 and tools, not another python3 earlier on PATH.
	cd "$(DEBDIR)/src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	rm -rf "$(DEBDIR)/src"

rpmspec-check:
	rpmspec -P packaging/rpm/wg-pod.spec > /dev/null

clean:
	rm -rf build
