// What the cluster tests share: where to write, where the built binaries
// are (the test's runfiles under Bazel, bazel-bin by hand), and reading a
// whole file (logs, ready files, PEM files).
#ifndef STRATA_TESTS_CLUSTER_TEST_PATHS_H_
#define STRATA_TESTS_CLUSTER_TEST_PATHS_H_

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace strata::cluster_test {

inline std::string TempDir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d != nullptr ? d : "/tmp";
}

// The folder holding router/, worker/ and tools/ binaries.
inline std::string BinDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return srcdir != nullptr ? std::string(srcdir) + "/strata" : "bazel-bin";
}

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace strata::cluster_test

#endif  // STRATA_TESTS_CLUSTER_TEST_PATHS_H_
