// The launcher controls Linux processes (posix_spawn, pidfd, /proc); it runs nowhere else.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
