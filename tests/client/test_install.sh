#!/usr/bin/env bash
# libkvclient as a user gets it: `cmake --install` into a fresh prefix, then
# an outside program built with `cc app.c $(pkg-config --cflags --libs
# kvclient)`, run against the shared library and linked statically.
# Usage: test_install.sh BUILD_DIR [CC]
set -u
build=${1:?usage: test_install.sh BUILD_DIR [CC]}
cc=${2:-cc}
work=$(mktemp -d /tmp/kv-client-install.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

p=$work/prefix
cmake --install "$build" --prefix "$p" --component kvclient >"$work/install.out" 2>&1 \
  || { cat "$work/install.out"; echo "FAIL: cmake --install"; exit 1; }
for f in include/kv/client.h include/kv/errors.h include/kv/limits.h lib/libkvclient.a \
         lib/libkvclient.so lib/libkvclient.so.0 lib/pkgconfig/kvclient.pc; do
  [ -e "$p/$f" ] || fail "$f not installed"
done

cat >"$work/app.c" <<'APP'
/* Opens a client to an endpoint nobody listens on and prints the error's
 * code word; also checks the argument checks need no server. */
#include <kv/client.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 200;
    kv_client *c = NULL;
    int rc = kv_client_open(&c, "127.0.0.1:1", &o);
    int bad = kv_client_open(&c, "no-port", &o);
    printf("%s %s %s\n", kv_errword(rc), kv_errword(bad), kv_strerror(KV_ETIMEOUT));
    return rc == KV_EUNAVAILABLE && bad == KV_EINVAL && c == NULL ? 0 : 1;
}
APP

export PKG_CONFIG_PATH=$p/lib/pkgconfig
pkg-config --exists kvclient || fail "pkg-config does not find kvclient"
want="UNAVAILABLE INVALID timed out: the outcome is unknown"

# Shared.
if "$cc" -Wall -Werror "$work/app.c" -o "$work/app-shared" $(pkg-config --cflags --libs kvclient) \
     2>"$work/cc1.out"; then
  out=$(LD_LIBRARY_PATH=$p/lib "$work/app-shared") || fail "shared app exited $?: $out"
  [ "$out" = "$want" ] || fail "shared app printed '$out'"
  LD_LIBRARY_PATH=$p/lib ldd "$work/app-shared" | grep -q "$p/lib/libkvclient.so.0" \
    || fail "shared app does not use the installed libkvclient.so.0"
else
  cat "$work/cc1.out"; fail "shared build"
fi

# Only the API leaves the shared library.
extra=$(nm -D --defined-only "$p/lib/libkvclient.so" | awk '$2 ~ /^[TDBR]$/ {print $3}' \
  | sed 's/@.*//' | grep -v '^kv_' || true)
[ -z "$extra" ] || fail "libkvclient.so exports more than kv_*: $(echo $extra | head -c 300)"
internal=$(nm -D --defined-only "$p/lib/libkvclient.so" | grep -E ' (kv_frame|kv_xxh3|kv_log|kv__)' || true)
[ -z "$internal" ] || fail "libkvclient.so exports internals: $internal"

# Static: the archive plus protobuf-c and xxhash, nothing else of kv.
if "$cc" -Wall -Werror "$work/app.c" -o "$work/app-static" $(pkg-config --cflags kvclient) \
     -Wl,-Bstatic $(pkg-config --static --libs kvclient) -Wl,-Bdynamic 2>"$work/cc2.out"; then
  ldd "$work/app-static" | grep -q kvclient && fail "static app still needs libkvclient.so"
  out=$(env -u LD_LIBRARY_PATH "$work/app-static") || fail "static app exited $?: $out"
  [ "$out" = "$want" ] || fail "static app printed '$out'"
else
  cat "$work/cc2.out"; fail "static build"
fi

[ "$fails" -eq 0 ] && echo "ok: client install, shared and static" && exit 0
exit 1
