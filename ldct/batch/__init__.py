"""Batch denoising of worklists and archives on Ray, resumable through a ledger.

worklist: what to denoise; ledger: what is done; dicomweb: the PACS with retries; workers: the
Ray actor that denoises one series per call; run: the driver (back-pressure, progress, audit).
"""
