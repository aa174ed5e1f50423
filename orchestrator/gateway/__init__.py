"""The gateway: the one path every tool call takes (validate, decide, limit, approve, run, record).

The agent loop, the HTTP API, the MCP server and ``stockade tools call`` are
thin entrances to :class:`Gateway`; none of them checks policy on its own.
"""

from orchestrator.gateway._approval_gate import ApprovalGate
from orchestrator.gateway._gateway import Gateway

__all__ = ["ApprovalGate", "Gateway"]
