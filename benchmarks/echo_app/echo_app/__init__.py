"""Bare echo ServerApp/ClientApp for benchmarks/flower_exchange.py."""
