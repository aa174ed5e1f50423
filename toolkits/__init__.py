"""Stockade's built-in toolkits. Each sub-package is one toolkit; tools run in sandboxes."""
