# pypam build. `make demo` and `make test` are the README's two commands: on a fresh
# Debian 12 or 13 machine (after `apt-get install make git`) they install what they
# need (apt and pip), build, and run.
#
# `make build` wires everything to this source tree: build/pam_pypam.so loads modules
# from ./modules and Python packages from . and .venv. `make install` builds a second
# copy with the system paths and installs it (DESTDIR= for staging).

SYS_PYTHON  := /usr/bin/python3
VENV        := $(CURDIR)/.venv
PY          := $(VENV)/bin/python
# Deferred (=, not :=): on a fresh machine python3 only exists once `apt` has run.
VENV_SITE    = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
PYINCLUDE    = $(shell $(SYS_PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')

PREFIX      := /usr
LIBDIR      := $(PREFIX)/lib/pypam
SITE        := $(LIBDIR)/python
MODULEDIR   := $(LIBDIR)/modules
MULTIARCH   := $(or $(shell gcc -print-multiarch 2>/dev/null),x86_64-linux-gnu)
PAMDIR      := $(or $(shell pkg-config --variable=securedir pam 2>/dev/null),/usr/lib/$(MULTIARCH)/security)
BINDIR      := $(PREFIX)/bin
SBINDIR     := $(PREFIX)/sbin
SYSTEMDDIR  := $(PREFIX)/lib/systemd/system
UDEVDIR     := $(PREFIX)/lib/udev/rules.d
# `make install` installs the PIN service pinutild, which then alone (with root) may
# open the TPM; SERVICE=no installs the fallback instead: no service, the TPM for group
# tss and a set-gid-tss `pinutil` (README "Installing").
SERVICE     := yes
STATEDIR    := /var/lib/pinutild

APT_PACKAGES := build-essential pkg-config python3 python3-dev python3-venv \
	libpam0g-dev libtss2-dev swtpm swtpm-tools tpm2-tools libpam-wrapper pamtester \
	libpam-python python3-pypamtest util-linux systemd libcap2-bin

# The `pypam` admin command (pypam.stack, stdlib only): $(1) is where pypam/ lives.
pypam_command = printf '\043!%s -I\nimport sys\nsys.path.insert(0, "%s")\nfrom pypam.stack.cli import main\nsys.exit(main())\n' $(SYS_PYTHON) $(1)

# `pinutild` (pinutil.service): the same shape, run by systemd (systemd/pinutild.service).
pinutild_command = printf '\043!%s -I\nimport sys\nsys.path.insert(0, "%s")\nfrom pinutil.service.__main__ import main\nsys.exit(main())\n' $(SYS_PYTHON) $(1)
# `pinutil-proof` (pinutil.service.proof): pinutild's root password proof, the same shape.
pinutil_proof_command = printf '\043!%s -I\nimport sys\nsys.path.insert(0, "%s")\nfrom pinutil.service.proof import main\nsys.exit(main())\n' $(SYS_PYTHON) $(1)

# `make deb` (debian/): Debian's build tools and Debian's own Python modules, no PyPI;
# `make test-deb` also lints the packages, installs them in a debootstrap root, and
# boots such a root with systemd as PID 1 (systemd-nspawn) to run the units.
DEB_APT_PACKAGES := debhelper dh-python pandoc python3-cffi python3-setuptools \
	dpkg-dev fakeroot lintian debootstrap systemd-container
DEBDIR      := $(CURDIR)/build/debian-package
MANPAGES    := $(patsubst docs/%.md,build/man/%.8,$(wildcard docs/pam_*.md docs/pinutil.md docs/pinutild.md docs/pypam.md \
	docs/pypam-keyring-rekey.md))

.PHONY: all deps apt venv build test demo bench install clean lint test-distros safe-copy fuzz faults test-realapps \
	man deb deb-tools test-deb

all: build

# Tests run code as `nobody`, and the loader refuses modules that are group-writable or
# not root's: a checkout under a 0700 home (/root) or a `git archive` tarball extracted
# as root (modes 0664/0775) cannot be used in place. Such a tree is built and tested in
# a copy with safe modes in a world-traversable place, named in the first output line.
UNSAFE_TREE := $(shell sh tools/unsafe-tree $(CURDIR))
SAFE_COPY   := /var/cache/pypam-safe-copy/$(shell echo '$(CURDIR)' | md5sum | cut -c1-12)

ifneq ($(UNSAFE_TREE),)
ifdef PYPAM_IN_SAFE_COPY
$(error the safe copy $(CURDIR) is still unusable: $(UNSAFE_TREE))
endif
all deps apt venv build test test-deb test-realapps demo bench lint install fuzz faults: safe-copy
	$(MAKE) -C $(SAFE_COPY) PYPAM_IN_SAFE_COPY=1 $@

safe-copy:
	@echo "pypam: $(UNSAFE_TREE): building and running in the copy $(SAFE_COPY)"
	install -d -o root -g root -m 0755 /var/cache/pypam-safe-copy $(SAFE_COPY)
	find $(SAFE_COPY) -mindepth 1 -maxdepth 1 ! -name .venv ! -name build -exec rm -rf {} +
	umask 022 && tar -C $(CURDIR) --exclude=./.venv --exclude=./build --exclude=./.git \
		--exclude=__pycache__ -cf - . | tar -C $(SAFE_COPY) --no-same-owner --no-same-permissions -xf -
else

deps: apt venv

# Installs only what is missing, so a prepared machine does not need the network.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(SYS_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

build: venv
	PYPAM_NATIVE_OUT=$(CURDIR)/build PYPAM_MODULE_DIR=$(CURDIR)/modules \
	PYPAM_SEARCH_PATH=$(CURDIR):$(VENV_SITE) \
	$(PY) setup.py -q build_ext --inplace --build-temp build/temp
	gcc -O2 -Wall -Wextra -o build/pamhost tests/host/pamhost.c -lpam -lpthread
	# Test-only fault injection (LD_PRELOAD), never installed: tests/test_faults.py.
	gcc -shared -fPIC -O2 -Wall -Wextra -I$(PYINCLUDE) -o build/faultwrap.so tests/faults/wrap.c -ldl
	# The stack engine's differential tests: a stub PAM module and a batch host.
	gcc -shared -fPIC -O2 -Wall -Wextra -o build/stack_stub.so tests/stack/stub_module.c
	gcc -O2 -Wall -Wextra -o build/stackhost tests/stack/stackhost.c -lpam
	$(call pypam_command,$(CURDIR)) > build/pypam && chmod 0755 build/pypam
	# Bytecode the embedded interpreter may use (it never writes any): checked-hash pycs
	# for PAM modules (pypam/loader.py trusts no other kind), ordinary ones for packages.
	$(PY) -m compileall -q --invalidation-mode checked-hash modules bench/modules
	$(PY) -m compileall -q pypam pinutil

# In parallel (pytest-xdist, one worker per core): every test has its own swtpm, work
# directories and pam.d, so tests share nothing but the machine.
test: deps build
	$(VENV)/bin/pytest -q -n auto tests --ignore=tests/package

# The Debian packages: built, linted, installed, used, upgraded and purged in a
# throw-away Debian 12 root, and their units run by systemd as PID 1 in another, booted
# with systemd-nspawn (~5 min; a separate target so that `make test` stays quick and
# needs no debootstrap). CI runs both.
# Only the real applications (sudo, su, login, sshd, vlock, python-pam) in their sandbox
# (tests/realapps, README "Tests"; `make test` runs them too). Their PIN login times go
# to bench/realapps.json.
test-realapps: deps build
	$(VENV)/bin/pytest -q -n auto tests/realapps

test-deb: deps deb-tools
	$(VENV)/bin/pytest -q tests/package

# Longer runs than `make test` does: every parser target for FUZZ_SECONDS each, adding
# what libFuzzer finds to the kept corpus (tests/fuzz/corpus/TARGET); and every call
# of every function failed in turn along a login (the test prints the totals).
FUZZ_SECONDS ?= 120
fuzz: deps build
	for t in $$($(PY) -c 'import sys; sys.path[:0] = [".", "modules"]; from tests.fuzz.targets import TARGETS; print(" ".join(TARGETS))'); do \
		mkdir -p build/fuzz && $(PY) tests/fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 \
			-artifact_prefix=build/fuzz/$$t- tests/fuzz/corpus/$$t || exit 1; \
	done

faults: deps build
	PYPAM_FAULT_SWEEP=full $(VENV)/bin/pytest -q -s tests/test_faults.py

demo: deps build
	$(PY) examples/demo.py

bench: deps build
	$(PY) bench/run.py
	$(PY) bench/breakdown.py
	$(PY) bench/service.py
	$(PY) bench/stack.py
	$(PY) bench/imports.py

lint: venv
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check pypam pinutil modules tests bench devtools examples tools/pypam-keyring-rekey

install: build
	rm -rf build/install
	PYPAM_NATIVE_OUT=$(CURDIR)/build/install PYPAM_MODULE_DIR=$(MODULEDIR) \
	PYPAM_SEARCH_PATH=$(SITE) \
	$(PY) setup.py -q build_ext --build-lib build/install/lib --build-temp build/install/temp
	install -d $(DESTDIR)$(SITE) $(DESTDIR)$(MODULEDIR) $(DESTDIR)$(PAMDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) \
		$(DESTDIR)$(UDEVDIR)
	$(PY) -m pip install -q --disable-pip-version-check --no-compile --upgrade \
		--target $(DESTDIR)$(SITE) cffi cryptography
	# The cffi modules built in place by `build` hold no paths: copied as they are.
	cp -r pypam pinutil $(DESTDIR)$(SITE)/
	find $(DESTDIR)$(SITE)/pypam $(DESTDIR)$(SITE)/pinutil -name '__pycache__' -prune -exec rm -rf {} +
	# Root-owned bytecode, made now: the embedded interpreter never writes any.
	$(SYS_PYTHON) -m compileall -q $(DESTDIR)$(SITE)/pypam $(DESTDIR)$(SITE)/pinutil
	install -m 0644 modules/tpm_pin.py modules/master_key.py $(DESTDIR)$(MODULEDIR)/
	$(SYS_PYTHON) -m compileall -q --invalidation-mode checked-hash -d $(MODULEDIR) $(DESTDIR)$(MODULEDIR)
	install -m 0644 build/install/pam_pypam.so $(DESTDIR)$(PAMDIR)/pam_pypam.so
	# The enrolment proof's own service (a new file, never an edit of an existing stack;
	# an admin's copy is kept).
	install -d $(DESTDIR)/etc/pam.d
	test -e $(DESTDIR)/etc/pam.d/pinutil || install -m 0644 examples/pam.d/pinutil $(DESTDIR)/etc/pam.d/pinutil
	# The pam-auth-update profile (Debian, Ubuntu): off until `pam-auth-update --enable
	# pypam-tpm-pin`; installing it changes no stack.
	install -d $(DESTDIR)/usr/share/pam-configs
	install -m 0644 debian/pam-configs/pypam-tpm-pin $(DESTDIR)/usr/share/pam-configs/
	$(call pypam_command,$(SITE)) > build/install/pypam
	install -m 0755 build/install/pypam $(DESTDIR)$(BINDIR)/pypam
	install -m 0755 build/install/pinutil $(DESTDIR)$(BINDIR)/pinutil
	# Re-keys a GNOME login keyring to the master-key token (pypam-keyring-rekey(8)):
	# root's, users run it through sudo. Needs python3-jeepney only when it runs.
	install -m 0755 tools/pypam-keyring-rekey $(DESTDIR)$(SBINDIR)/pypam-keyring-rekey
ifeq ($(SERVICE),yes)
	# pinutild (docs/pinutild.md): its command, its units, its system user (no login, no
	# home, no person in its group), its state directory, and the udev rule giving the
	# TPM device to that group alone. `pinutil` has no set-id bit: users reach the TPM
	# only through the service. Nothing is enabled or started here: that is
	# `systemctl enable --now pinutild.socket`, the administrator's decision.
	$(call pinutild_command,$(SITE)) > build/install/pinutild
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSTEMDDIR)
	install -m 0755 build/install/pinutild $(DESTDIR)$(SBINDIR)/pinutild
	install -m 0644 systemd/pinutild.socket systemd/pinutild.service $(DESTDIR)$(SYSTEMDDIR)/
	# Its root password proof (pinutil-proof.socket, one pinutil-proof@.service per
	# proof), for users who enrol their own PIN through pinutild: not enabled either.
	$(call pinutil_proof_command,$(SITE)) > build/install/pinutil-proof
	install -m 0755 build/install/pinutil-proof $(DESTDIR)$(SBINDIR)/pinutil-proof
	install -m 0644 systemd/pinutil-proof.socket systemd/pinutil-proof@.service $(DESTDIR)$(SYSTEMDDIR)/
	getent passwd pinutild >/dev/null || [ -n "$(DESTDIR)" ] || useradd --system --user-group \
		--no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pinutild
	install -m 0644 udev/60-pypam-tpm.rules $(DESTDIR)$(UDEVDIR)/
	# The service's layout (pin/state.py), also over a fallback install's root:tss one.
	# Root acts by name only on the state directory itself (its parent is root's):
	# inside it the service account may have left symlinks, which install -d or chmod
	# as root would follow (chown -R does not). What is inside is made and chmodded as
	# pinutild, whom a symlink there can only hurt itself.
	install -d -m 0700 $(DESTDIR)$(STATEDIR)
	if ! getent passwd pinutild >/dev/null; then install -d -m 0700 $(DESTDIR)$(STATEDIR)/enrolments; \
	elif [ -n "$(DESTDIR)" ]; then install -d -m 0700 $(DESTDIR)$(STATEDIR)/enrolments && \
		chown -R pinutild:pinutild $(DESTDIR)$(STATEDIR); \
	else chown -R pinutild:pinutild $(STATEDIR) && \
		setpriv --reuid="$$(id -u pinutild)" --regid="$$(id -g pinutild)" --clear-groups sh -c \
		'mkdir -p -m 0700 "$$1/enrolments" && find "$$1" -type d -exec chmod 0700 {} +' \
		sh $(STATEDIR); fi
else
	# The fallback without the service: the TPM device for group tss (Debian's tpm-udev
	# does the same), `pinutil` set-gid tss (the helper backend), the state directory
	# root:tss so that it can write enrolment records there (docs/pinutil.md).
	install -m 0644 udev/fallback/60-pypam-tpm.rules $(DESTDIR)$(UDEVDIR)/
	getent group tss >/dev/null || [ -n "$(DESTDIR)" ] || groupadd --system tss
	install -d -m 0750 $(DESTDIR)$(STATEDIR) $(DESTDIR)$(STATEDIR)/enrolments
	if getent group tss >/dev/null; then chgrp tss $(DESTDIR)$(BINDIR)/pinutil && chmod 2755 $(DESTDIR)$(BINDIR)/pinutil && \
		chown -R root:tss $(DESTDIR)$(STATEDIR) && chmod 0750 $(DESTDIR)$(STATEDIR) && \
		chmod 0770 $(DESTDIR)$(STATEDIR)/enrolments; \
	else echo "warning: group tss missing: pinutil installed without setgid"; fi
endif
	# On this machine (not a staging DESTDIR): records of earlier versions move into the
	# state directory (pinutil migrate-state, crash-safe), and udev applies the rule to a
	# TPM present now, as Debian's tpm-udev does (this changes the device's group; it
	# starts nothing).
	if [ -z "$(DESTDIR)" ]; then $(BINDIR)/pinutil migrate-state || \
		echo "warning: pinutil migrate-state failed: run it again as root"; fi
	if [ -z "$(DESTDIR)" ] && udevadm --version >/dev/null 2>&1; then \
		udevadm control --reload-rules || :; udevadm trigger --action=change --subsystem-match=tpmrm --subsystem-match=tpm || :; fi

endif

# Fresh minimal Debian 12 and 13 roots, the README's commands run inside each as a
# newcomer would; prints the counts (tests/distros/run says how).
test-distros:
	@command -v debootstrap >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
	tests/distros/run

# Manual pages from docs/*.md; the first line (`# name(8): title`) becomes the header.
# Long values go in definition lists, not table cells: groff cannot justify a cell
# narrower than its longest word, and lintian reports each such line.
man: $(MANPAGES)

build/man/%.8: docs/%.md
	@mkdir -p build/man
	tail -n +2 $< | pandoc -s -f markdown-smart -t man --columns=1000 -o $@.tmp \
		-M title="$$(echo $* | tr a-z A-Z)" -M section=8 -M header="pypam" \
		-M footer="pypam $$(dpkg-parsechangelog -l debian/changelog -S Version)" \
		-M date="$$(date -u -d @$$(dpkg-parsechangelog -l debian/changelog -S Timestamp) +%Y-%m-%d)"
	mv $@.tmp $@

# Debian packages built by dpkg-buildpackage in a copy of the tree (nothing in the
# tree changes): $(DEBDIR)/*.deb.
deb-tools:
	$(MAKE) apt APT_PACKAGES="$(APT_PACKAGES) $(DEB_APT_PACKAGES)"

deb: deb-tools
	rm -rf $(DEBDIR) && mkdir -p $(DEBDIR)/pypam
	umask 022 && tar -C $(CURDIR) --exclude=./.venv --exclude=./build --exclude=./.git \
		--exclude=__pycache__ --exclude='*.so' -cf - . | tar -C $(DEBDIR)/pypam --no-same-permissions -xf -
	cd $(DEBDIR)/pypam && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	@ls $(DEBDIR)/*.deb

# Only what `make build` generates: the cffi modules, bytecode, build/ and egg-info.
clean:
	rm -rf build pypam/_libpam.py pinutil/tpm/_tss*.so pinutil/tpm/_tss.c pinutil/tpm/_tss.o *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -prune -exec rm -rf {} +
