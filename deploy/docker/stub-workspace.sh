#!/bin/sh
# Stub sources for the container image's dependency layer. From the workspace's manifests alone
# (the root Cargo.toml and each member's), writes an empty src/lib.rs for every member and
# `fn main() {}` for every target a member's manifest declares ([[bin]], [[bench]], [[test]],
# [[example]]), so that cargo can build every dependency before the real sources are copied in.
# scripts/deploy-check.sh replays it on the manifests the Dockerfile copies.
#
# Usage: deploy/docker/stub-workspace.sh     (in the workspace root)
set -eu

[ -f Cargo.toml ] || { echo "stub-workspace: no Cargo.toml in $(pwd)" >&2; exit 1; }

# The members listed in the root manifest's `members = [ ... ]`, one per line.
members="$(awk '
    /^members[ \t]*=/ { inside = 1 }
    inside {
        line = $0
        while (match(line, /"[^"]*"/)) {
            print substr(line, RSTART + 1, RLENGTH - 2)
            line = substr(line, RSTART + RLENGTH)
        }
        if ($0 ~ /\]/) exit
    }
' Cargo.toml)"
[ -n "$members" ] || { echo "stub-workspace: no workspace members in Cargo.toml" >&2; exit 1; }

for dir in $members; do
    case "$dir" in
        *'*'* | *'?'*) echo "stub-workspace: glob member '$dir' is not supported; list members one by one" >&2; exit 1 ;;
    esac
    [ -f "$dir/Cargo.toml" ] || { echo "stub-workspace: $dir/Cargo.toml is missing (is it copied?)" >&2; exit 1; }
    mkdir -p "$dir/src"
    : > "$dir/src/lib.rs"
    # Declared targets: their `path`, or Cargo's default place for their `name`.
    awk '
        function value(line) { sub(/^[^=]*=[ \t]*"/, "", line); sub(/".*$/, "", line); return line }
        function flush() {
            if (kind == "bin" && path == "") path = "src/bin/" name ".rs"
            if (kind == "bench" && path == "") path = "benches/" name ".rs"
            if (kind == "test" && path == "") path = "tests/" name ".rs"
            if (kind == "example" && path == "") path = "examples/" name ".rs"
            if (kind != "") print path
            kind = ""; name = ""; path = ""
        }
        /^\[\[(bin|bench|test|example)\]\]/ { flush(); kind = $0; gsub(/[][ \t]/, "", kind); next }
        /^\[/ { flush(); next }
        kind != "" && /^[ \t]*name[ \t]*=/ { name = value($0) }
        kind != "" && /^[ \t]*path[ \t]*=/ { path = value($0) }
        END { flush() }
    ' "$dir/Cargo.toml" | while read -r target; do
        mkdir -p "$(dirname "$dir/$target")"
        echo 'fn main() {}' > "$dir/$target"
    done
done
