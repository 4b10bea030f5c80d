#!/usr/bin/env bash
# The servers and tools the tests start for real (Debian packages): Orthanc with its DICOMweb
# plugin, Chromium for the browser reader page, dicom3tools' dciodvfy for derived series.
# Installed with apt when run as root; otherwise one line says what to run. `make test` and
# CI (.ci/run, through `make test`) both use this script.
set -euo pipefail
plugin=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
if command -v Orthanc >/dev/null && [ -e "$plugin" ] && command -v chromium >/dev/null \
  && command -v dciodvfy >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need Orthanc with DICOMweb, Chromium and dciodvfy: run 'sudo apt-get install orthanc orthanc-dicomweb chromium dicom3tools' (or 'make test' as root)." >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  orthanc orthanc-dicomweb chromium dicom3tools >/dev/null
# the package starts a system Orthanc on 8042/4242; the tests start their own on free ports
if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
  systemctl stop orthanc || true
fi
