"""``python -m orchestrator.policy``: print the policy JSON Schema (regenerates the file)."""

import sys

from orchestrator.policy._schema import render_policy_schema

sys.stdout.write(render_policy_schema())
