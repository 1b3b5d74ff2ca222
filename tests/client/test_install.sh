#!/usr/bin/env bash
# libkvclient as a user gets it: `cmake --install` into a fresh prefix, then
# an outside program built with `cc app.c $(pkg-config --cflags --libs
# kvclient)`, run against the shared library and linked statically; the
# static archive exports only the API (an application's own snapstream_walk
# or kv_frame_pack does not clash with ours); a C++ program includes
# <kv/client.h> and uses the version, kv_options and kv_errstr, built through
# pkg-config and through a CMake project's find_package(kvclient).
# Usage: test_install.sh BUILD_DIR [CC [CXX]]
set -u
build=${1:?usage: test_install.sh BUILD_DIR [CC [CXX]]}
cc=${2:-cc}
cxx=${3:-c++}
work=$(mktemp -d /tmp/kv-client-install.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

p=$work/prefix
cmake --install "$build" --prefix "$p" --component kvclient >"$work/install.out" 2>&1 \
  || { cat "$work/install.out"; echo "FAIL: cmake --install"; exit 1; }
for f in include/kv/client.h include/kv/errors.h include/kv/limits.h lib/libkvclient.a \
         lib/libkvclient.so lib/libkvclient.so.0 lib/pkgconfig/kvclient.pc \
         lib/cmake/kvclient/kvclientConfig.cmake lib/cmake/kvclient/kvclientConfigVersion.cmake; do
  [ -e "$p/$f" ] || fail "$f not installed"
done

cat >"$work/app.c" <<'APP'
/* Opens a client to an endpoint nobody listens on and prints the error's
 * code word; also checks the argument checks need no server. */
#include <kv/client.h>
#include <stdio.h>
#include <string.h>

/* Names that are ours inside libkvclient.a: the application's own must
 * win (the archive keeps its copies local). */
int snapstream_walk(void);
int snapstream_walk(void) { return 7; }
int kv_frame_pack(void);
int kv_frame_pack(void) { return 8; }

int main(void) {
    if (snapstream_walk() != 7 || kv_frame_pack() != 8)
        return 2;
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

# Only the API leaves the static archive either: every defined global is a
# kv_ name of the API (no protobuf descriptors, kv_frame_*, snapstream_*).
extra=$(nm "$p/lib/libkvclient.a" | awk '$2 ~ /^[A-TV-Z]$/ {print $3}' \
  | grep -Ev '^kv_[a-z]' | sort -u || true)
internal=$(nm "$p/lib/libkvclient.a" | awk '$2 ~ /^[A-TV-Z]$/ {print $3}' \
  | grep -E '^(kv_frame|kv_xxh3|kv_log|kvc_)' | sort -u || true)
[ -z "$extra$internal" ] ||
  fail "libkvclient.a exports more than the API: $(echo $extra $internal | head -c 300)"

# Static: the archive plus protobuf-c and xxhash, nothing else of kv.
if "$cc" -Wall -Werror "$work/app.c" -o "$work/app-static" $(pkg-config --cflags kvclient) \
     -Wl,-Bstatic $(pkg-config --static --libs kvclient) -Wl,-Bdynamic 2>"$work/cc2.out"; then
  ldd "$work/app-static" | grep -q kvclient && fail "static app still needs libkvclient.so"
  out=$(env -u LD_LIBRARY_PATH "$work/app-static") || fail "static app exited $?: $out"
  [ "$out" = "$want" ] || fail "static app printed '$out'"
else
  cat "$work/cc2.out"; fail "static build"
fi

# C++: the header as it is, the version, kv_options and kv_errstr.
cat >"$work/app.cpp" <<'APP'
#include <kv/client.h>
#include <cstdio>
#include <cstring>

int main() {
    static_assert(KV_VERSION_NUMBER >= 100, "a version number");
    if (std::strcmp(kv_version(), KV_VERSION_STRING) != 0 ||
        kv_version_number() != KV_VERSION_NUMBER)
        return 2;
    kv_options *o = kv_options_new();
    if (o == nullptr || kv_options_set_timeout_ms(o, 0) != KV_EINVAL ||
        std::strstr(kv_errstr(), "timeout") == nullptr)
        return 3;
    kv_options_set_timeout_ms(o, 200);
    kv_options_set_token_file(o, "/nonexistent/kv-token");
    kv_client *c = nullptr;
    int rc = kv_client_open_ex(&c, "127.0.0.1:1", o);
    kv_options_free(o);
    std::printf("%s %s | %s\n", kv_version(), kv_errword(rc), kv_errstr());
    return rc == KV_EMISSING && c == nullptr ? 0 : 1;
}
APP
wantxx="$(sed -nE 's/^project\(kv VERSION ([0-9.]+).*/\1/p' "$(dirname "$0")/../../CMakeLists.txt") MISSING | token file /nonexistent/kv-token: No such file or directory"
if "$cxx" -std=c++11 -Wall -Wextra -Werror "$work/app.cpp" -o "$work/appxx" \
     $(pkg-config --cflags --libs kvclient) 2>"$work/cxx1.out"; then
  out=$(LD_LIBRARY_PATH=$p/lib "$work/appxx") || fail "C++ app exited $?: $out"
  [ "$out" = "$wantxx" ] || fail "C++ app printed '$out', want '$wantxx'"
else
  cat "$work/cxx1.out"; fail "C++ build against the installed header"
fi

# CMake: find_package(kvclient), shared and static, from a C++ project.
mkdir -p "$work/proj"
cp "$work/app.cpp" "$work/proj/app.cpp"
cat >"$work/proj/CMakeLists.txt" <<'PROJ'
cmake_minimum_required(VERSION 3.18)
project(kvapp LANGUAGES C CXX)
find_package(kvclient 0.1 REQUIRED)
add_executable(app_shared app.cpp)
target_link_libraries(app_shared PRIVATE kvclient::kvclient)
add_executable(app_static app.cpp)
target_link_libraries(app_static PRIVATE kvclient::kvclient_static)
PROJ
if cmake -S "$work/proj" -B "$work/proj/build" -DCMAKE_PREFIX_PATH="$p" \
     -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" >"$work/cm.out" 2>&1 &&
   cmake --build "$work/proj/build" >>"$work/cm.out" 2>&1; then
  out=$(env -u LD_LIBRARY_PATH "$work/proj/build/app_shared") || fail "CMake shared app exited $?: $out"
  [ "$out" = "$wantxx" ] || fail "CMake shared app printed '$out'"
  ldd "$work/proj/build/app_static" | grep -q kvclient && fail "CMake static app needs libkvclient.so"
  out=$("$work/proj/build/app_static") || fail "CMake static app exited $?: $out"
  [ "$out" = "$wantxx" ] || fail "CMake static app printed '$out'"
else
  cat "$work/cm.out"; fail "a CMake project with find_package(kvclient)"
fi

[ "$fails" -eq 0 ] && echo "ok: client install, shared and static, C and C++, pkg-config and CMake" && exit 0
exit 1
