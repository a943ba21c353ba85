#!/usr/bin/env bash
# test.sh runs every check and every test of marketd, on a fresh Debian
# machine with only Go installed: it installs what the tests need from Debian
# when it is missing (Chromium for the live-page test, Python websockets for
# the Python example client, kcat, node), then runs the lint steps and the whole suite
# with the race detector.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)   # a librdkafka producer against the embedded broker
command -v node >/dev/null 2>&1 || missing+=(nodejs) # the JavaScript example client
# node's ws module, a client of stream's TestDeflateClients (NODE_PATH=/usr/share/nodejs)
node -e "require('/usr/share/nodejs/ws')" >/dev/null 2>&1 || missing+=(node-ws)
# The Python example runs on Debian's own interpreter, whatever python3 is first on PATH.
if [ ! -x /usr/bin/python3 ]; then
  missing+=(python3 python3-websockets)
elif ! /usr/bin/python3 -c 'import websockets' >/dev/null 2>&1; then
  missing+=(python3-websockets)
fi
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "test.sh: gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt: not formatted:"; echo "$unformatted"; exit 1
fi
echo "test.sh: go vet"
go vet ./...
echo "test.sh: go mod tidy"
go mod tidy -diff
echo "test.sh: staticcheck"
go tool staticcheck ./...
echo "test.sh: go test -race"
go test -race -count=1 -timeout 20m ./...
