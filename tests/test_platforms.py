"""Windows conventions as pure functions, fed Windows-style environments on any machine:
ssh.exe discovery, ~ and %VAR% in paths, data and config dirs, the hosts file as
Windows editors save it, the transport default and the local host's refusal."""
from __future__ import annotations

import ntpath

import pytest

from remote.bridge.transport import TransportUnavailable, local_shell_argv
from remote.core.config import ConfigError, load_hosts, parse_host, ssh_option_path
from remote.core.platforms import default_config_dir, default_data_dir, default_transport, expand_user_path, find_openssh_tool

WINDOWS_ENV = {
    "USERPROFILE": "C:\\Users\\Ann Lee",
    "HOMEDRIVE": "C:",
    "HOMEPATH": "\\Users\\Ann Lee",
    "LOCALAPPDATA": "C:\\Users\\Ann Lee\\AppData\\Local",
    "APPDATA": "C:\\Users\\Ann Lee\\AppData\\Roaming",
    "WINDIR": "C:\\WINDOWS",
    "PATH": "C:\\Program Files\\Blender Foundation\\Blender 4.2;\"C:\\Tools\\Git\\usr\\bin\";;C:\\WINDOWS\\system32",
    "KEYS": "D:\\pod keys",
}


def files(*paths: str):
    """An is_file that knows exactly these Windows paths (case-insensitive, as NTFS)."""
    known = {ntpath.normcase(p) for p in paths}
    return lambda path: ntpath.normcase(path) in known


def test_ssh_exe_on_path_wins_over_the_bundled_client():
    found = find_openssh_tool("ssh", WINDOWS_ENV, "win32",
                              files("C:\\Tools\\Git\\usr\\bin\\ssh.exe", "C:\\WINDOWS\\System32\\OpenSSH\\ssh.exe"))
    assert found == "C:\\Tools\\Git\\usr\\bin\\ssh.exe"  # quotes around the PATH entry are not part of it


def test_windows_bundled_openssh_is_found_without_path():
    environment = dict(WINDOWS_ENV, PATH="C:\\WINDOWS\\system32")
    found = find_openssh_tool("sftp", environment, "win32", files("C:\\Windows\\System32\\OpenSSH\\sftp.exe"))
    assert ntpath.normcase(found) == ntpath.normcase("C:\\WINDOWS\\System32\\OpenSSH\\sftp.exe")
    no_windir = {"PATH": "", "SystemRoot": "E:\\Win"}
    assert find_openssh_tool("ssh", no_windir, "win32", files("E:\\Win\\System32\\OpenSSH\\ssh.exe")).startswith("E:")


def test_missing_openssh_says_how_to_install_it():
    with pytest.raises(FileNotFoundError, match=r"ssh\.exe was not found.*OpenSSH Client.*Optional features"):
        find_openssh_tool("ssh", WINDOWS_ENV, "win32", files())


def test_posix_runs_the_bare_name_from_path():
    assert find_openssh_tool("ssh", {"PATH": "/nowhere"}, "linux", files()) == "ssh"
    assert find_openssh_tool("sftp", {}, "darwin", files()) == "sftp"


@pytest.mark.parametrize("raw, expected", [
    ("~\\.ssh\\id_ed25519", "C:\\Users\\Ann Lee\\.ssh\\id_ed25519"),
    ("~/.ssh/known_hosts", "C:\\Users\\Ann Lee\\.ssh/known_hosts"),
    ("~", "C:\\Users\\Ann Lee"),
    ("%USERPROFILE%\\keys\\pod key", "C:\\Users\\Ann Lee\\keys\\pod key"),
    ("$KEYS\\runpod", "D:\\pod keys\\runpod"),
    ("%UNSET_NAME%\\x", "%UNSET_NAME%\\x"),  # left as written, so the error names it
    ("C:\\Program Files\\keys\\id", "C:\\Program Files\\keys\\id"),
    ("\\\\server\\share\\id", "\\\\server\\share\\id"),
])
def test_windows_paths_expand_home_and_variables_and_keep_backslashes(raw, expected):
    assert expand_user_path(raw, WINDOWS_ENV, "win32") == expected


def test_windows_home_falls_back_to_homedrive_and_homepath():
    environment = {"HOMEDRIVE": "D:", "HOMEPATH": "\\Users\\ann"}
    assert expand_user_path("~\\.ssh\\id", environment, "win32") == "D:\\Users\\ann\\.ssh\\id"


def test_posix_paths_expand_home_and_variables():
    environment = {"HOME": "/home/ann", "KEYS": "/srv/keys"}
    assert expand_user_path("~/.ssh/id", environment, "linux") == "/home/ann/.ssh/id"
    assert expand_user_path("${KEYS}/pod", environment, "linux") == "/srv/keys/pod"


def test_windows_data_and_config_dirs():
    assert default_data_dir(WINDOWS_ENV, "win32") == "C:\\Users\\Ann Lee\\AppData\\Local\\posefactory"
    assert default_config_dir(WINDOWS_ENV, "win32") == "C:\\Users\\Ann Lee\\AppData\\Roaming\\posefactory"
    bare = {"USERPROFILE": "C:\\Users\\bo"}
    assert default_data_dir(bare, "win32") == "C:\\Users\\bo\\AppData\\Local\\posefactory"
    assert default_config_dir(bare, "win32") == "C:\\Users\\bo\\AppData\\Roaming\\posefactory"
    chosen = dict(WINDOWS_ENV, POSEFACTORY_DATA_DIR="E:\\renders\\state")
    assert default_data_dir(chosen, "win32") == "E:\\renders\\state"


def test_posix_data_and_config_dirs_follow_xdg():
    assert default_data_dir({"HOME": "/home/ann"}, "linux") == "/home/ann/.local/share/posefactory"
    assert default_data_dir({"HOME": "/h", "XDG_DATA_HOME": "/d"}, "linux") == "/d/posefactory"
    assert default_config_dir({"HOME": "/home/ann"}, "darwin") == "/home/ann/.config/posefactory"


def test_ssh_options_get_paths_with_spaces_and_backslashes_intact():
    assert ssh_option_path("C:\\Users\\Ann Lee\\.ssh\\known_hosts", "win32") == '"C:/Users/Ann Lee/.ssh/known_hosts"'
    assert ssh_option_path("/home/ann/.ssh/known_hosts", "linux") == "/home/ann/.ssh/known_hosts"
    host = parse_host("ssh_hosts.yaml", "pod", {
        "host": "ssh.runpod.io", "user": "abc-123", "identity_file": "C:\\Users\\Ann Lee\\.ssh\\id_ed25519",
        "known_hosts": "C:\\Users\\Ann Lee\\.ssh\\known_hosts"}, platform="win32")
    argv = host.ssh_command(platform="win32", program="C:\\WINDOWS\\System32\\OpenSSH\\ssh.exe")
    assert argv[:2] == ["C:\\WINDOWS\\System32\\OpenSSH\\ssh.exe", "-tt"]
    assert argv[argv.index("-i") + 1] == "C:\\Users\\Ann Lee\\.ssh\\id_ed25519"  # its own argument: no splitting
    assert 'UserKnownHostsFile="C:/Users/Ann Lee/.ssh/known_hosts"' in argv
    assert argv[-1] == "abc-123@ssh.runpod.io"


def test_transport_defaults_to_pipes_on_windows_only_and_pty_is_refused_there():
    assert default_transport("win32") == "pipe" and default_transport("linux") == "pty"
    assert default_transport("darwin") == "pty"
    assert parse_host("f", "pod", {"host": "h"}, platform="win32").transport == "pipe"
    assert parse_host("f", "pod", {"host": "h"}, platform="linux").transport == "pty"
    assert parse_host("f", "pod", {"host": "h", "transport": "pipe"}, platform="linux").transport == "pipe"
    with pytest.raises(ConfigError, match=r"f: pod\.transport: 'pty' needs a pseudo-terminal.*use 'pipe'"):
        parse_host("f", "pod", {"host": "h", "transport": "pty"}, platform="win32")
    with pytest.raises(ConfigError, match=r"pod\.transport: 'serial' is not one of pty, pipe"):
        parse_host("f", "pod", {"host": "h", "transport": "serial"})


def test_hosts_file_saved_by_a_windows_editor_loads(tmp_path):
    # Notepad: a UTF-8 byte-order mark and CRLF line ends; Windows paths unquoted, with spaces.
    text = ("# my pods\r\n"
            "runpod:\r\n"
            "  host: ssh.runpod.io\r\n"
            "  user: abc123xyz-64410d5a\r\n"
            "  identity_file: C:\\Users\\Ann Lee\\.ssh\\id_ed25519\r\n"
            "  transport: pipe\r\n"
            "  env:\r\n"
            "    HF_HOME: /workspace/hf\r\n")
    path = tmp_path / "ssh hosts (copy).yaml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    pod = load_hosts(path)["runpod"]
    assert pod.host == "ssh.runpod.io" and pod.user == "abc123xyz-64410d5a"
    assert pod.identity_file == "C:\\Users\\Ann Lee\\.ssh\\id_ed25519"
    assert pod.env == {"HF_HOME": "/workspace/hf"} and pod.transport == "pipe"


def test_backslashes_in_a_double_quoted_yaml_path_are_a_clear_error(tmp_path):
    path = tmp_path / "ssh_hosts.yaml"
    path.write_text('pod:\r\n  host: h\r\n  identity_file: "C:\\Users\\ann\\id"\r\n')
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_hosts(path)


def test_local_host_on_windows_says_it_is_unavailable_and_what_to_do():
    with pytest.raises(TransportUnavailable, match=r"'local' host needs bash.*Windows.*ssh_hosts\.yaml"):
        local_shell_argv("pipe", "win32")


def test_local_host_argv_per_transport_and_platform():
    which = {"bash": "/bin/bash", "script": "/usr/bin/script"}.get
    assert local_shell_argv("pty", "linux", which) == ["bash", "--login"]
    assert local_shell_argv("pipe", "linux", which) == ["script", "-q", "-f", "-e", "-c", "bash --login", "/dev/null"]
    assert local_shell_argv("pipe", "darwin", which) == ["script", "-q", "/dev/null", "bash", "--login"]
    with pytest.raises(TransportUnavailable, match="'script' tool"):
        local_shell_argv("pipe", "linux", {"bash": "/bin/bash"}.get)
    with pytest.raises(TransportUnavailable, match="needs bash"):
        local_shell_argv("pty", "linux", {}.get)



def test_hosts_file_in_the_user_config_dir_is_found(tmp_path, monkeypatch):
    from remote.core.config import default_hosts_file

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_hosts_file() is None
    (tmp_path / "posefactory").mkdir()
    (tmp_path / "posefactory" / "ssh_hosts.yaml").write_text("pod:\n  host: h\n")
    assert default_hosts_file() == tmp_path / "posefactory" / "ssh_hosts.yaml"
