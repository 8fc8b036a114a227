using System.Runtime.InteropServices;
using Platform.ServiceDefaults;

namespace Platform.Launcher.Tests;

/// <summary>
/// ServiceDefaults' <see cref="NativeHeap"/> (what <see cref="IdleMemoryTrimmer"/> runs after its collection), in this
/// process's own C heap: pages freed between blocks still in use stay resident until it trims them. It reads this
/// process's RSS, so it runs alone, after the tests that run in parallel.
/// </summary>
[Collection(Name)]
public sealed class NativeHeapTests
{
    public const string Name = "NativeHeap (alone)";

    private const int Blocks = 16_384;
    private const int BlockSize = 4_000; // well under glibc's mmap threshold: these come from an arena

    [Fact]
    public void Trim_gives_the_pages_of_freed_blocks_back_to_the_kernel()
    {
        var blocks = new nint[Blocks];
        var ones = new byte[BlockSize];
        Array.Fill(ones, (byte)1);
        try
        {
            for (var i = 0; i < Blocks; i++)
            {
                blocks[i] = Marshal.AllocHGlobal(BlockSize); // malloc
                Marshal.Copy(ones, 0, blocks[i], BlockSize); // touched: resident
            }
            // Every 16th block stays in use, so free() cannot shrink the heap from its top: 15 of 16 pages of the
            // ~64 MB are free but resident, as after a burst that left a few long-lived allocations behind.
            for (var i = 0; i < Blocks; i++)
            {
                if (i % 16 == 0) continue;
                Marshal.FreeHGlobal(blocks[i]);
                blocks[i] = 0;
            }

            var before = ResidentBytes();
            Assert.True(NativeHeap.Trim(), "malloc_trim released nothing");
            var after = ResidentBytes();

            // About 56 MB of whole free pages; the runtime's own threads may allocate meanwhile, hence the margin.
            Assert.True(before - after > 32L << 20, $"RSS {before >> 20} MiB -> {after >> 20} MiB after the trim");
        }
        finally
        {
            foreach (var block in blocks)
            {
                if (block != 0) Marshal.FreeHGlobal(block);
            }
        }
    }

    private static long ResidentBytes()
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0]) * 1024;
    }
}

[CollectionDefinition(NativeHeapTests.Name, DisableParallelization = true)]
public sealed class NativeHeapCollection;
