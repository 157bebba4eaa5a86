#!/bin/sh
# Build dist/atomrelay_<version>_<arch>.deb from the onedir bundle in dist/atomrelay/ (`make deb`).
#   packaging/build-deb.sh [VERSION]     (VERSION defaults to atomrelay.__version__)
# Needs dpkg-deb and gzip only (no debhelper, no Docker); files are owned by root in the package.
set -eu
cd "$(dirname "$0")/.."

version=${1:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' atomrelay/__init__.py)}
arch=$(dpkg --print-architecture)
# The package's maintainer: $DEB_MAINTAINER, or the author of the commit it is built from.
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || echo 'atomrelay <atomrelay@invalid>')}
root=build/deb/atomrelay
out=dist/atomrelay_${version}_${arch}.deb

test -x dist/atomrelay/atomrelay || { echo "no dist/atomrelay/atomrelay: run make dist first" >&2; exit 1; }
rm -rf "$root"
install -d -m 0755 "$root/DEBIAN" "$root/opt" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/etc/atomrelay" "$root/usr/share/doc/atomrelay" "$root/usr/share/lintian/overrides"
cp -a dist/atomrelay "$root/opt/atomrelay"
find "$root/opt/atomrelay/_internal" -type f -name '*.so*' -exec chmod 0644 {} +  # loaded, never run
ln -s /opt/atomrelay/atomrelay "$root/usr/bin/atomrelay"
install -m 0644 packaging/atomrelay.service "$root/lib/systemd/system/atomrelay.service"
# Root-only until postinst gives the atomrelay group read access (dpkg-statoverride).
install -m 0640 config.example.yaml "$root/etc/atomrelay/config.yaml"
install -m 0644 packaging/deb/copyright "$root/usr/share/doc/atomrelay/copyright"
install -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/atomrelay"
printf 'atomrelay (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' \
    "$version" "$(cat build/pyinstaller/COMMIT 2>/dev/null || echo 'the source tree')" "$maintainer" \
    "$(date -R -d "@$(stat -c %Y dist/atomrelay/atomrelay)")" | gzip -9n > "$root/usr/share/doc/atomrelay/changelog.gz"
chmod 0644 "$root/usr/share/doc/atomrelay/changelog.gz"

install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/atomrelay/config.yaml > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s|@MAINTAINER@|$maintainer|" packaging/deb/control > "$root/DEBIAN/control"

dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
