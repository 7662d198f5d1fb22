#!/bin/sh
# Builds examples/web/image (or the layout directory given), an OCI image layout (tag 1.0)
# with busybox httpd serving a page, using Debian's umoci and busybox-static
# (apt-get install umoci busybox-static). No root, no container daemon.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
layout="${1:-$here/image}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:1.0"
umoci unpack --rootless --image "$layout:1.0" "$work/bundle"
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/srv/www"
cp /bin/busybox "$root/bin/busybox"
ln -sf busybox "$root/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/srv/www:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nwww:x:33:\n' > "$root/etc/group"
cp "$here/index.html" "$root/srv/www/index.html"
umoci repack --image "$layout:1.0" "$work/bundle"
umoci config --image "$layout:1.0" \
  --config.entrypoint /bin/busybox \
  --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 8080 --config.cmd -h --config.cmd /srv/www \
  --config.workingdir /srv/www \
  --config.user www \
  --config.env PATH=/bin
umoci gc --layout "$layout"
echo "built $layout (tag 1.0)"
