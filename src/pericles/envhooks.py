"""Environment variables that change what a program does without changing the program.

Under a command policy a caller may not set these (in `env` or `secret_env`) unless the
rule that allows the command names them. This is the one list; where it comes from:

- glibc's `UNSECURE_ENVVARS` (sysdeps/generic/unsecvars.h): what the dynamic loader
  strips before it runs a setuid program, because each can make it load other code or read
  other files (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, GCONV_PATH, LOCPATH, NLSPATH,
  GLIBC_TUNABLES, MALLOC_TRACE, RES_OPTIONS, HOSTALIASES, TZDIR, TMPDIR, ...).
- Shells: variables bash and POSIX sh read to run code at start or while tracing (BASH_ENV,
  ENV, SHELLOPTS, BASHOPTS, PS4, exported functions BASH_FUNC_*, IFS, CDPATH, GLOBIGNORE).
- Interpreters and runtimes: the variables their manuals list for extra modules, options or
  start-up code (PYTHON*, PERL5*, PERLLIB, RUBY*, GEM_*, NODE_OPTIONS, NODE_PATH,
  JAVA_TOOL_OPTIONS, _JAVA_OPTIONS, JDK_JAVA_OPTIONS, CLASSPATH, LUA_*, TCLLIBPATH, PHPRC,
  PHP_INI_SCAN_DIR, GIT_*, OPENSSL_CONF, OPENSSL_MODULES, SSL_CERT_*).
- HOME and XDG_*: where programs look for their own start-up files (~/.bashrc under some
  shells, Python's user site-packages and usercustomize, ~/.gitconfig).

PATH is not here: it only decides which file a bare name runs, and the policy matches the
resolved file. But an allowed program that itself runs other programs by name (a shell,
`env`, `xargs`, `find -exec`) follows the caller's PATH: do not allow such programs, or
pin what they may be given with parameter rules.
"""

from __future__ import annotations

#: Names refused exactly.
NAMES = frozenset(
    {
        # glibc unsecvars.h (those not under LD_)
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "MALLOC_TRACE",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
        # shells
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "IFS",
        "CDPATH",
        "GLOBIGNORE",
        "PROMPT_COMMAND",
        # interpreters and runtimes
        "PERLLIB",
        "NODE_OPTIONS",
        "NODE_PATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "TCLLIBPATH",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "OPENSSL_CONF",
        "OPENSSL_MODULES",
        "OPENSSL_ENGINES",
        "HOME",
    }
)

#: Names refused by prefix.
PREFIXES = (
    "LD_",
    "BASH_FUNC_",
    "PYTHON",
    "PERL5",
    "RUBY",
    "GEM_",
    "LUA_",
    "GIT_",
    "SSL_CERT_",
    "XDG_",
    "MALLOC_",
)


def hook(name: str) -> str | None:
    """The list entry `name` falls under (e.g. "LD_*"), or None when it is not a hook."""
    if name in NAMES:
        return name
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return prefix + "*"
    return None
