const ADJECTIVES = [
  'amber', 'bold', 'brave', 'bright', 'brisk', 'calm', 'clever', 'cosmic', 'crisp', 'curious', 'dapper', 'daring', 'eager',
  'fancy', 'fast', 'fierce', 'fluffy', 'gentle', 'giant', 'glad', 'golden', 'grumpy', 'happy', 'hasty', 'honest', 'humble',
  'icy', 'jolly', 'keen', 'kind', 'lazy', 'lively', 'lucky', 'mellow', 'mighty', 'misty', 'modest', 'nimble', 'noble',
  'odd', 'patient', 'plucky', 'polite', 'proud', 'quick', 'quiet', 'rapid', 'rusty', 'shiny', 'silent', 'silly', 'sleepy',
  'sly', 'smart', 'snappy', 'snowy', 'solid', 'spicy', 'steady', 'sunny', 'swift', 'tidy', 'tiny', 'tough', 'upbeat',
  'vivid', 'warm', 'wild', 'wise', 'witty', 'zany', 'zesty',
];

const ANIMALS = [
  'badger', 'bat', 'bear', 'beaver', 'bison', 'bobcat', 'camel', 'cat', 'cheetah', 'cobra', 'crab', 'crane', 'crow',
  'deer', 'dingo', 'dolphin', 'donkey', 'eagle', 'eel', 'elk', 'falcon', 'ferret', 'finch', 'fox', 'frog', 'gecko',
  'goat', 'goose', 'gorilla', 'hawk', 'hedgehog', 'heron', 'horse', 'ibis', 'impala', 'jackal', 'jaguar', 'koala',
  'lemur', 'lion', 'lizard', 'llama', 'lynx', 'mole', 'moose', 'newt', 'octopus', 'otter', 'owl', 'panda', 'parrot',
  'pelican', 'penguin', 'puma', 'rabbit', 'raven', 'seal', 'shark', 'sloth', 'snail', 'sparrow', 'squid', 'stork',
  'swan', 'tiger', 'toad', 'turtle', 'walrus', 'wasp', 'whale', 'wolf', 'wombat', 'yak', 'zebra',
];

/** A random `adjective-animal` stem; the caller appends `-N` to make a run name unique. */
export function nameStem(random: () => number = Math.random): string {
  const pick = (list: string[]): string => list[Math.floor(random() * list.length)] ?? list[0] ?? 'run';
  return `${pick(ADJECTIVES)}-${pick(ANIMALS)}`;
}

/** Run names look like `grumpy-zebra-1`. */
export const RUN_NAME_PATTERN = /^[a-z]+-[a-z]+-\d+$/;
