"""cc_grpc_library: .proto files -> C++ messages and gRPC stubs.

Uses Debian's protoc and grpc_cpp_plugin directly in a genrule, because the
Bazel protobuf rules would need to download protobuf's sources.
Import paths are relative to the proto/ folder (e.g. "strata/v1/common.proto").
"""

def cc_grpc_library(name, srcs, deps = [], grpc = True, visibility = None, testonly = False):
    """srcs: .proto files under proto/; deps: other cc_grpc_library targets."""
    outs = []
    for src in srcs:
        if not src.endswith(".proto"):
            fail("cc_grpc_library srcs must be .proto files: " + src)
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    plugin = ""
    if grpc:
        plugin = " --grpc_out=$(GENDIR)/proto --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin"
    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = ("/usr/bin/protoc --proto_path=proto --cpp_out=$(GENDIR)/proto" + plugin +
               " " + " ".join(["proto/" + s for s in srcs])),
    )
    native.filegroup(name = name + "_srcs", srcs = srcs)
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        copts = ["-Wno-unused-parameter"],
        deps = deps + ["//third_party:grpc", "//third_party:protobuf"],
        visibility = visibility,
        testonly = testonly,
    )
