#!/usr/bin/env bash
# Regenerate constraints.txt from the working .venv after a deliberate upgrade.
# torch stays at the cached CPU wheel's version (2.13.0); the local "+cpu" tag is dropped so the pin
# also matches on machines where the same release is installed without it.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Exact versions edgellm is tested with (pip install -c constraints.txt). torch is installed first, alone."
  .venv/bin/pip freeze --exclude-editable | grep -v '^edgellm' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > constraints.txt.tmp
grep -q '^torch==2.13.0$' constraints.txt.tmp || { echo "torch is not 2.13.0 in .venv; refusing" >&2; rm constraints.txt.tmp; exit 1; }
mv constraints.txt.tmp constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) pins)"
