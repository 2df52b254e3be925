#!/usr/bin/env bash
# Regenerates the TEST-ONLY development CA and server certificate in certs/dev/.
# These keys are committed on purpose so tests and the demo work offline; they protect
# nothing and must never be used outside tests. Run from anywhere: bash certs/gen.sh
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p dev && cd dev
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=entitygate TEST-ONLY dev CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=localhost" -keyout server.key.tmp -out server.csr 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in server.key.tmp -out server.key
cat > server.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:entitygate.localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 36500 \
  -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext server.key.tmp ca.srl
# Test-only JWT signing keys (RSA and EC) for the demo and the tests.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt-rsa.key 2>/dev/null
openssl pkey -in jwt-rsa.key -pubout -out jwt-rsa.pub
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out jwt-ec.key.tmp 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in jwt-ec.key.tmp -out jwt-ec.key && rm jwt-ec.key.tmp
openssl pkey -in jwt-ec.key -pubout -out jwt-ec.pub
openssl genpkey -algorithm ED25519 -out jwt-ed25519.key 2>/dev/null
openssl pkey -in jwt-ed25519.key -pubout -out jwt-ed25519.pub
echo "regenerated $(pwd)"
