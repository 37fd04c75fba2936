#!/bin/sh
# Compiles the TypeScript SDK, its example and its tests, then runs the tests.
set -eu
cd "$(dirname "$0")"
rm -rf dist
tsc -p .
node --test dist/test/*.test.js
