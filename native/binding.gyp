{
  "targets": [
    {
      "target_name": "mqcrypto",
      "sources": ["mqcrypto.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      # every OpenSSL symbol is bound when the addon loads: one that this Node does not export (an OpenSSL
      # without the deprecated SHA256_* functions, ...) makes the load fail, and the envelope falls back to
      # node:crypto, instead of the process dying at the first call (Node loads addons with RTLD_LAZY)
      "ldflags": ["-Wl,-z,now"],
      "defines": ["NAPI_DISABLE_CPP_EXCEPTIONS"]
    }
  ]
}
