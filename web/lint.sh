#!/usr/bin/env bash
# Lints (ESLint, @eslint/js recommended, browser globals) and format-checks (Prettier) the browser code under web/,
# with the exact versions pinned in package.json and package-lock.json. Exits non-zero on any lint error or
# unformatted file. Needs node and npm; the tools come from the npm registry into ./node_modules (git-ignored).
# To reformat: npx --no -- prettier --write web eslint.config.js
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --prefer-offline --no-audit --no-fund --ignore-scripts --loglevel=error
npx --no -- eslint --max-warnings 0 web eslint.config.js
npx --no -- prettier --check web eslint.config.js
