"""cuda_library: compiles .cu files with the CUDA 13 nvcc into a cc_library.

nvcc runs in a genrule (Bazel 4.2.3 has no CUDA rules and rules_cuda would
need a download). Each .cu becomes one PIC object for sm_80 and sm_90a that
links with cudart, cuBLAS(Lt) and NCCL from /usr/local/cuda.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-gencode arch=compute_80,code=sm_80",
    "-gencode arch=compute_90a,code=sm_90a",
    "-Xcompiler -fPIC",
    "--expt-relaxed-constexpr",
    "-I.",
]

def cuda_library(name, srcs, hdrs = [], cu_deps = [], deps = [], visibility = None, testonly = False):
    """srcs: .cu files; hdrs: headers they and their users include;
    cu_deps: extra headers the .cu files include (files or filegroups)."""
    objs = []
    for src in srcs:
        if not src.endswith(".cu"):
            fail("cuda_library srcs must be .cu files: " + src)
        obj = "_cuda_objs/" + name + "/" + src[:-len(".cu")] + ".pic.o"
        native.genrule(
            name = name + "_" + src.replace("/", "_").replace(".", "_"),
            srcs = [src] + hdrs + cu_deps,
            outs = [obj],
            cmd = NVCC + " " + " ".join(NVCC_FLAGS) + " -c $(location " + src + ") -o $@",
            testonly = testonly,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["//third_party:cuda"],
        visibility = visibility,
        testonly = testonly,
        alwayslink = True,
    )
