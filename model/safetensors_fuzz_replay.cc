// Runs the fuzz target without libFuzzer: every corpus file, then seeded
// random mutations of each (bit flips, truncations, splices, length edits).
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::string> LoadCorpus(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    out.push_back(ss.str());
  }
  closedir(d);
  return out;
}

void Run(const std::string& s) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "model/testdata/safetensors_corpus";
  if (argc > 1) dir = argv[1];
  std::vector<std::string> corpus = LoadCorpus(dir);
  if (corpus.empty()) {
    std::fprintf(stderr, "no corpus files in %s\n", dir.c_str());
    return 1;
  }
  std::mt19937_64 rng(12345);
  int runs = 0;
  for (const std::string& seed : corpus) {
    Run(seed);
    ++runs;
    for (int i = 0; i < 20000; ++i) {
      std::string m = seed;
      switch (rng() % 5) {
        case 0:  // flip bits
          for (int k = 0; k < 1 + static_cast<int>(rng() % 4) && !m.empty(); ++k) {
            m[rng() % m.size()] ^= static_cast<char>(1u << (rng() % 8));
          }
          break;
        case 1:  // truncate
          m.resize(m.empty() ? 0 : rng() % m.size());
          break;
        case 2: {  // rewrite the length prefix
          uint64_t n = rng() % (m.size() + 16);
          for (int k = 0; k < 8 && k < static_cast<int>(m.size()); ++k) m[k] = static_cast<char>(n >> (8 * k));
          break;
        }
        case 3: {  // replace a digit inside the JSON
          for (int k = 0; k < 16 && !m.empty(); ++k) {
            size_t p = rng() % m.size();
            if (m[p] >= '0' && m[p] <= '9') {
              m[p] = static_cast<char>('0' + rng() % 10);
              break;
            }
          }
          break;
        }
        default: {  // splice with another corpus entry
          const std::string& other = corpus[rng() % corpus.size()];
          size_t cut = m.empty() ? 0 : rng() % m.size();
          size_t from = other.empty() ? 0 : rng() % other.size();
          m = m.substr(0, cut) + other.substr(from);
        }
      }
      Run(m);
      ++runs;
    }
  }
  std::printf("ran %d inputs from %zu corpus files without a crash\n", runs, corpus.size());
  return 0;
}
