"""Explanation: the registry of methods, the explainer and its compiled steps, and the methods."""
