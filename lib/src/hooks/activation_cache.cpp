#include <fmt/format.h>

#include "hooks/names.h"
#include "interp/error.h"
#include "interp/hooks.h"

namespace interp {

const std::string& ActivationCache::resolve(const std::string& name) const {
  auto a = aliases_.find(name);
  return a != aliases_.end() ? a->second : name;
}

const at::Tensor& ActivationCache::operator[](const std::string& name) const {
  auto it = values_.find(resolve(name));
  if (it == values_.end())
    throw Error(fmt::format("activation cache has no '{}' ({} cached; {}); was it in the names filter?", name,
                            values_.size(), detail::did_you_mean(name, order_)));
  return it->second;
}

const at::Tensor& ActivationCache::get(const std::string& short_name, std::optional<int> layer) const {
  return (*this)[act_name(short_name, layer, n_layers_ > 0 ? std::optional<int>(n_layers_) : std::nullopt)];
}

bool ActivationCache::contains(const std::string& name) const { return values_.count(resolve(name)) > 0; }

std::vector<std::string> ActivationCache::names() const { return order_; }

void ActivationCache::put(const std::string& name, at::Tensor value) {
  if (values_.find(name) == values_.end()) order_.push_back(name);
  values_[name] = std::move(value);
}

void ActivationCache::alias(const std::string& alias, const std::string& name) {
  if (values_.count(name)) aliases_[alias] = name;
}

}  // namespace interp
