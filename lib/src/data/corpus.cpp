#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "interp/data.h"
#include "interp/error.h"
#include "interp/util.h"
#include "io/atomic_file.h"

namespace interp {
namespace fs = std::filesystem;
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> files_in(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return {path};
  if (!fs::is_directory(path, ec)) throw Error(fmt::format("{}: no such file or folder", path));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    std::string name = e.path().filename().string();
    if (e.is_regular_file() && name[0] != '.' && name != "package.json" && name != "README" &&
        name.find(".tmp") == std::string::npos)
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());  // directory order is not deterministic
  if (files.empty()) throw Error(fmt::format("{}: folder has no files", path));
  return files;
}

// Brown files are whitespace-separated word/TAG tokens: most tokens have a '/' not at the start.
bool looks_like_brown(const std::string& content) {
  std::istringstream ss(content.substr(0, 4096));
  std::string tok;
  int n = 0, tagged = 0;
  while (ss >> tok && n < 200) {
    ++n;
    auto slash = tok.rfind('/');
    if (slash != std::string::npos && slash > 0 && slash + 1 < tok.size()) ++tagged;
  }
  return n >= 5 && tagged * 10 >= n * 9;
}

std::vector<std::pair<uint32_t, uint32_t>> split_lines(const std::string& text) {
  std::vector<std::pair<uint32_t, uint32_t>> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    size_t a = start, b = end;
    while (a < b && std::isspace(static_cast<unsigned char>(text[a]))) ++a;
    while (b > a && std::isspace(static_cast<unsigned char>(text[b - 1]))) --b;
    if (b > a) lines.emplace_back(static_cast<uint32_t>(a), static_cast<uint32_t>(b));
    start = end + 1;
  }
  return lines;
}

bool is_closing(const std::string& w) {
  static const char* k[] = {".", ",", ";", ":", "!", "?", ")", "]", "''", "'", "%"};
  for (const char* s : k)
    if (w == s) return true;
  return false;
}
bool is_opening(const std::string& w) { return w == "``" || w == "(" || w == "[" || w == "$"; }

}  // namespace

std::vector<std::string> brown_files(const std::vector<std::string>& files);

Document brown_parse(const std::string& content, const std::string& id) {
  Document doc;
  doc.id = id;
  std::istringstream lines(content);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream ss(line);
    std::string tok;
    bool first_in_line = true, after_opening = false;
    uint32_t line_begin = 0;
    while (ss >> tok) {
      auto slash = tok.rfind('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == tok.size())
        throw Error(fmt::format("{}: '{}' is not a word/TAG token; is this a Brown corpus file?", id, tok));
      std::string word = tok.substr(0, slash), tag = tok.substr(slash + 1);
      std::string surface = (word == "``" || word == "''") ? "\"" : word;
      if (first_in_line) {
        if (!doc.text.empty()) doc.text += ' ';
        line_begin = static_cast<uint32_t>(doc.text.size());
      } else if (!is_closing(word) && !after_opening) {
        doc.text += ' ';
      }
      uint32_t b = static_cast<uint32_t>(doc.text.size());
      doc.text += surface;
      doc.words.emplace_back(b, static_cast<uint32_t>(doc.text.size()));
      doc.tags.push_back(tag);
      after_opening = is_opening(word);
      first_in_line = false;
    }
    if (!first_in_line) doc.lines.emplace_back(line_begin, static_cast<uint32_t>(doc.text.size()));
  }
  return doc;
}

// The Brown corpus's own files are named c[a-r]NN; its package also holds README, CONTENTS, ...
std::vector<std::string> brown_files(const std::vector<std::string>& files) {
  std::vector<std::string> out;
  for (const auto& f : files) {
    std::string n = fs::path(f).filename().string();
    if (n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && std::isdigit(static_cast<unsigned char>(n[2])) &&
        std::isdigit(static_cast<unsigned char>(n[3])))
      out.push_back(f);
  }
  return out;
}

Corpus corpus_load(const std::string& path, const std::string& format_in) {
  std::vector<std::string> files = files_in(path);
  std::string format = format_in;
  if (format == "auto" || format == "brown") {
    auto brown = brown_files(files);
    if (!brown.empty()) files = brown;
  }
  if (format == "auto") {
    std::string head = read_file(files[0]);
    format = looks_like_brown(head) ? "brown" : fs::is_directory(path) ? "text-files" : "text-lines";
  }
  if (format != "brown" && format != "text-files" && format != "text-lines")
    throw Error(fmt::format("corpus format '{}' is not one of auto, brown, text-files, text-lines", format));
  Corpus c;
  c.path = path;
  c.format = format;
  for (const auto& f : files) {
    std::string content = read_file(f);
    std::string id = fs::path(f).filename().string();
    if (format == "brown") {
      c.docs.push_back(brown_parse(content, id));
    } else if (format == "text-files") {
      Document d;
      d.id = id;
      d.text = std::move(content);
      d.lines = split_lines(d.text);
      if (!d.lines.empty()) c.docs.push_back(std::move(d));
    } else {
      size_t line_no = 0;
      std::istringstream ss(content);
      std::string line;
      while (std::getline(ss, line)) {
        ++line_no;
        auto lines = split_lines(line);
        if (lines.empty()) continue;
        Document d;
        d.id = fmt::format("{}:{}", id, line_no);
        d.text = line.substr(lines[0].first, lines[0].second - lines[0].first);
        d.lines = {{0, static_cast<uint32_t>(d.text.size())}};
        c.docs.push_back(std::move(d));
      }
    }
  }
  if (c.docs.empty()) throw Error(fmt::format("{}: no documents (all files empty?)", path));
  Xxh64 h;
  h.update(format.data(), format.size());
  for (const auto& d : c.docs) {
    h.update(d.id.data(), d.id.size() + 1);
    h.update(d.text.data(), d.text.size());
  }
  c.hash = hex64(h.digest());
  return c;
}

void corpus_write_lines(const Corpus& corpus, const std::string& path) {
  AtomicFile out(path);
  for (const auto& d : corpus.docs) {
    for (const auto& [a, b] : d.lines) {
      std::string line = d.text.substr(a, b - a);
      std::replace(line.begin(), line.end(), '\n', ' ');
      line += '\n';
      out.write(line.data(), line.size());
    }
  }
  out.commit();
}

}  // namespace interp
