"""
The judge prompts judges.py sends, verbatim from the reference evaluation code (prompts are data: each block
cites its file and lines; judges.py builds and parses them).
"""

MCQ_PROMPT = (
    'You are an AI assistant who will help me to match '
    'an answer with several options of a single-choice question. '
    'You are provided with a question, several options, and an answer, '
    'and you need to find which option is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Z. '
    'Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n'
    'Example 1: \n'
    'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
    'Answer: a cute teddy bear\nYour output: A\n'
    'Example 2: \n'
    'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
    'Answer: Spider\nYour output: Z\n'
    'Example 3: \n'
    'Question: {}?\nOptions: {}\nAnswer: {}\nYour output: '
)
WEMATH_PROMPT = (
    'You are an AI assistant who will help me to match '
    'an answer with several options of a single-choice question. '
    'You are provided with a question, several options, and an answer, '
    'and you need to find which option is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Z. '
    'Your should output a single uppercase character in A, B, C, D, E, F, G (if they are valid options), and Z. \n'
    'Example 1: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\na cute teddy bear\n<end>\nYour output: A\n'
    'Example 2: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\nSpider\n<end>\nYour output: Z\n'
    'Example 3: \n'
    'Question: <start>\n{}\nOptions: {}\n<end>\nAnswer: <start>\n{}\n<end>\nYour output: '
)
YORN_PROMPT = (
    'You are an AI assistant who will help me to match an answer with two options of a question. '
    'The options are only Yes / No. '
    'You are provided with a question and an answer, '
    'and you need to find which option (Yes / No) is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Unknown. '
    'Your should output a single word among the following 3 choices: Yes, No, Unknown.\n'
    'Example 1: \n'
    "Question: Is the word in this image 'Hello'?\nAnswer: The word in this image is 'Hello'.\nYour output: Yes\n"
    'Example 2: \n'
    "Question: Is the word in this image 'Hello'?\n"
    "Answer: The word in this image is not 'Hello'.\nYour output: No\n"
    'Example 3: \n'
    'Question: {}?\nAnswer: {}\nYour output: '
)
LETTERS_PROMPT = (
    "You are a information extractor that extracts multiple choice letter answer choices "
    "from a paragraph that contains the answer choice and sometimes explaination of why that "
    "choice is correct to the given question.\n"
    "What letter did the following answer choose? If the answer did not select a letter answer choice, "
    "first try to infer the answer based off the given choices.\n"
    "If it does not seem like the given answer corresponds to an answer choice OR if there is no selected answer, "
    "please just respond with Z.\n"
    "Make sure you answer with ONLY the letters chosen.\n"
    'Example 1: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\na cute teddy bear\n<end>\nYour output: A\n'
    'Example 2: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\nSpider\n<end>\nYour output: Z\n'
    'Example 3: \n'
    'Question: <start>\nWhich figure is a rotation of the object?\n<end>\n'
    'Answer: <start>\nThe figure on the right, labeled "D," is a rotation of the object shown in the top left '
    'corner.\n<end>\nYour output: D\n'
    'Example 4: \n'
    'Question: <start>\nWhich of the boxes comes next in the sequence? Select from A-E\n<end>\n'
    'Answer: <start>\nThe sequence of the boxes is A, B, C, D, E.\n<end>\nYour output: ABCDE\n'
    'Example 5: \n'
    'Question: <start>\n{}\n<end>\nAnswer: <start>\n{}\n<end>\nYour output: '
)
# a plain Python string there, so "\b" of "\boxed" is a backspace character: kept as sent
YESNO_PROMPT = """
You are given a question, the correct answer, and a model's answer. Decide whether the model's answer matches the correct answer.

Ignore formatting differences such as LaTeX syntax, symbols, or wrappers (e.g., \boxed, $...$). Focus only on semantic or mathematical correctness.

If the model's answer is correct, respond with "Yes". Otherwise, respond with "No". Only output "Yes" or "No".

Question:
{question}
---
Correct Answer:
{answer}
---
Model Answer:
{model_response}
---
"""  # noqa: E501

# MathVerse (eval/vlmevalkit/vlmeval/dataset/utils/mathverse.py L8-115): a GPT extraction with six in-context
# examples, then a 0/1 consistency judgement with four; verbatim, as the code there builds them (its "{{3}}"
# are literal double braces: the examples are not format strings)
MATHVERSE_EXTRACT_PREFIX = (
    '\n'
    "I am providing you a response from a model to a math problem, termed 'Model Response'. You should extract the answer from the response as 'Extracted Answer'. Directly output the extracted answer with no explanation.\n"
    '\n'
    '\n'
    '\n'
    '1.\n'
    "Model response: 'Rounded to two decimal places, the perimeter of the sector is approximately:\n"
    '\n'
    "(-2, 1)'\n"
    'Extracted Answer: (-2, 1)\n'
    '\n'
    '\n'
    '\n'
    '2.\n'
    "Model response: 'at those points.\n"
    '\n'
    'Therefore, the correct option that represents the meaning of the intersection points of the graphs is:\n'
    '\n'
    'D. They give the solutions to the equation $f(t)=g(t)$.",\'\n'
    'Extracted Answer: D\n'
    '\n'
    '\n'
    '\n'
    '3.\n'
    "Model response: ' at 1 (there's a closed circle at y = 1), the range in interval notation is \\((-4, 1]\\).\n"
    '\n'
    'Final values:\n'
    'Domain: \\((-3, 3]\\)\n'
    "Range: \\((-4, 1]\\)'\n"
    'Extracted Answer: Domain: \\((-3, 3]\\)\n'
    'Range: \\((-4, 1]\\)\n'
    '\n'
    '\n'
    '\n'
    '4.\n'
    "Model response: 'As it stands, I cannot provide the correct option letter because there isn't enough information to solve for 'y'.'\n"
    'Extracted Answer: null\n'
    '\n'
    '\n'
    '\n'
    '5.\n'
    "Model response: 'Given that AB = 17.6 meters, we can now substitute into the equation:\n"
    '\n'
    'd = 17.6 / cos(38°)\n'
    '\n'
    "Therefore, to one decimal place, the distance d between Ned and Bart is approximately 22.3 meters.'\n"
    'Extracted answer: 22.3\n'
    '\n'
    '\n'
    '\n'
    '6.\n'
    'Model response:  have all the coefficients for the quadratic function:\n'
    '\\( f(x) = ax^2 + bx + c \\)\n'
    '\\( f(x) = -1x^2 - 2x + 1 \\)\n'
    '\n'
    'Therefore, the equation for the graphed function \\( f \\) is:\n'
    '\\( f(x) = -x^2 - 2x + 1 \\)"\'\n'
    'Extracted answer: f(x) = -x^2 - 2x + 1\n'
    '\n'
    '\n'
    '7.\n')  # noqa: E501
MATHVERSE_SCORE_PREFIX = (
    '\n'
    "Below are two answers to a math question. Question is [Question], [Standard Answer] is the standard answer to the question, and [Model_answer] is the answer extracted from a model's output to this question.  Determine whether these two answers are consistent.\n"
    'Please note that only when the [Model_answer] completely matches the [Standard Answer] means they are consistent. For non-multiple-choice questions, if the meaning is expressed in the same way, it is also considered consistent, for example, 0.5m and 50cm.\n'
    'If they are consistent, Judement is 1; if they are different, Judement is 0.\n'
    '\n'
    '\n'
    '\n'
    '[Question]: Write the set of numbers represented on the number line in interval notation.\n'
    '[Standard Answer]: (-2,1]\n'
    '[Model_answer] : Extracted Answer: \\((-2, 1)\\)\n'
    'Judgement: 0\n'
    '\n'
    '\n'
    '\n'
    '[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\n'
    'Choices:\n'
    'A:2\n'
    'B:2√{{3}}\n'
    'C:√{{3}}\n'
    'D:2√{{2}}\n'
    '[Standard Answer]: C\n'
    '[Model_answer] : B:2√{{3}}\n'
    'Judgement: 0\n'
    '\n'
    '\n'
    '\n'
    '[Question]: Find the domain and range of the function f using interval notation.\n'
    '[Standard Answer]: domain: [-4, 0) and range: (-3, 1]\n'
    '[Model_answer] : Range: \\((-4, 1]\\)\n'
    'Judgement: 0\n'
    '\n'
    '\n'
    '\n'
    '[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\n'
    'Choices:\n'
    'A:2\n'
    'B:2√{{3}}\n'
    'C:√{{3}}\n'
    'D:2√{{2}}\n'
    '[Standard Answer]: C\n'
    '[Model_answer] : null\n'
    'Judgement: 0\n'
    '\n'
    '\n')  # noqa: E501

# MathVision (eval/vlmevalkit/vlmeval/dataset/utils/mathv.py L42-97 build_mathv_gpt4_prompt): the extraction
# prompt with its five examples, verbatim; the question and 'Model respone: ' + answer follow
MATHV_EXTRACT_PREFIX = (
    '\n'
    'Please read the following example.\n'
    'Then extract the answer from the model response and type it at the end of the prompt.\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: Which number is missing?\n'
    '\n'
    'Model response: The number missing in the sequence is 14.\n'
    '\n'
    'Extracted answer: 14\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: What is the fraction of females facing the camera?\n'
    '\n'
    'Model response: The fraction of females facing the camera is 0.6,\n'
    'which means that six out of ten females in the group are facing the camera.\n'
    '\n'
    'Extracted answer: 0.6\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: How much money does Luca need to buy a sour apple candy and a butter-scotch candy? (Unit: $)\n'
    '\n'
    'Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.\n'
    '\n'
    'Extracted answer: 1.45\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: Between which two years does the line graph saw its maximum peak?\n'
    '\n'
    'Model response: The line graph saw its maximum peak between 2007 and 2008.\n'
    '\n'
    'Extracted answer: [2007, 2008]\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n'
    '\n'
    'Question: What fraction of the shape is blue?\n'
    '\n'
    'Choices: (A) 3/11 (B) 8/11 (C) 6/11 (D) 3/5\n'
    '\n'
    'Model response: The correct answer is (B) 8/11.\n'
    '\n'
    'Extracted answer: B\n'
    '\n')  # noqa: E501


# EMMA (SkyworkAI/Skywork-R1V @ b806cef, eval/EMMA/evaluation/utils.py L84-100 score_demo_prompt; evaluate.py
# create_test_prompt L54-59 strips it and appends the response, the answer and "Correct_or_not:"), verbatim
# (trailing spaces kept)
EMMA_SCORE_PROMPT = """Please read the following example. Then determine whether the response is correct and type it 
at the end of the prompt. It is worth noting that the final answer in the response is usually in \\boxed{}, 
You only need to compare the final answer in the response with the answer, without considering the logical 
correctness of the response itself.

Response: The correct answer is:\n\nA

Answer: A

Correct_or_not: Correct

Response: The correct option is:\n\n\\[\n\\boxed{E}\n\\]

Answer: C

Correct_or_not: Incorrect
"""
# MME-Reasoning open questions (eval/vlmevalkit/vlmeval/dataset/utils/mme_reasoning.py L1136-1160,
# MMEReasoning_openeval), verbatim; .format(question, answer, response) as there
MME_OPEN_PROMPT = """
Please read the following example. Then judge the answer and type it at the end of the prompt.
Below are two examples. Question is [Question], [Standard Answer] is the standard answer to the question, and [Model_answer] is the answer extracted from a model's output to this question.  Determine whether these two answers are consistent.
Note:
    Different expressions of the same number should also be considered consistent, for example, \\frac{{7}}{{2}} and 3.5.
    If a conversion results in a decimal approximation, the expressions can be considered consistent if the values are equal up to two decimal places, for example, \\sqrt{{3}} and 1.73.
If they are consistent, Judgement is 1; if they are different, Judgement is 0.\n
Example 1: 
    [Question]: What is the minimize length of the line?
    [Standard answer]: \\sqrt{{2}}
    [Model answer]: 1.414
    [Judgement]: 1
Example 2:
    [Question]: Given an image of a 3x3 maze. How to reach the end cell marked 'E' from the start cell is marked 'S'.
    [Standard answer]: ['Left', 'Right']
    [Model answer]: 'Left', 'Right' 
    [Judgement]: 1

Now, judge the anwser for the following question:
    [Question]: {question}
    [Standard answer]: {answer}
    [Model answer]: {response}
    [Judgement]: 
You should only output the judgement without any other texts.
"""

# PhyX multiple choice (open-compass/VLMEvalKit @ e8e78f05, vlmeval/dataset/utils/phyx.py L59-125:
# get_ICE_MC and build_phyx_gpt4_prompt_MC), verbatim: task description, the four examples each followed by
# "\n", then the gold and the prediction
PHYX_MC_TASK = """
Please read the following example. Given predicted answer and ground truth answer for Multi-Choice question.
The ground truth answer would be A/B/C/D. The predicted answer would be some words containing A/B/C/D.
Please compare the these two answers, then ONLY output judegement 1/0 for matched/unmatched at the end of the prompt. \n
"""
PHYX_MC_EXAMPLES = ["""
Ground truth answer: A \n
Predicted answer: A \n
Judegement: 1
""", """
Ground truth answer: B \n
Predicted answer: A \n
Judegement: 0
""", """
Ground truth answer: C \n
Predicted answer: ### Step 1: Calculate ( l_1 )
The lightbulb is ( 2.50, \\text\\{m\\}) above the floor, and the bottom of the mirror is (0.50, \\text\\{m\\}) \
above the floor. The vertical distance from the lightbulb to the bottom of the mirror is:
[
\\Delta y_1 = 2.50, \\text\\{m\\} - 0.50, \\text\\{m\\} = 2.00, \\text\\{m\\}.
] \n
Judegement: 0
""", """
Ground truth answer: D \n
Predicted answer: The correct option is D. \n
Judegement: 1
"""]

# SeePhys (open-compass/VLMEvalKit @ e8e78f05, vlmeval/dataset/utils/seephys.py), verbatim: the extraction
# prompt (build_extract_prompt L109-124: task description, five examples of get_example L73-106 each followed
# by "\n", the question, "Model response: " + the rule-extracted answer, "Extracted answer:"), then the 0/1
# scorer (prompt_scoring L11-70, stripped, then score_func L236-239 appends question, gold and extraction)
SEEPHYS_EXTRACT_TASK = """
Please read the following example.
Then extract the answer from the model response and type it at the end of the prompt.\n # noqa
"""
SEEPHYS_EXTRACT_EXAMPLES = ["""
Question: What is the net force acting on a 5 kg object accelerating at 3 m/s² to the right?\n
Model response: Using F = ma, the net force is 15 N to the right.\n
Extracted answer: the net force is 15 N to the right.
""", """
Question: Calculate the charge of an electron. (Unit: C)\n
Model response: The elementary charge of an electron is approximately -1.602 × 10⁻¹⁹ coulombs.\n
Extracted answer: -1.602 × 10⁻¹⁹ C
""", """
Question: How much money does Luca need to buy a sour apple candy and a butter-scotch candy? (Unit: $)\n
Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.\n
Extracted answer: $1.45
""", """
Question: Between which frequencies does human hearing typically range? \n
Model response: Human hearing ranges between 20 Hz and 20,000 Hz.\n
Extracted answer: [20 Hz, 20000 Hz]
""", """
Question: List the wavelengths of visible light colors.\n
Model response: Visible light ranges from:\n
- Red: ~700 nm\n
- Green: ~550 nm\n
- Blue: ~450 nanometre\n
Extracted answer: Red: 700 nm; Green: 550 nm; Blue: 450 nanometre.
"""]  # noqa: E501

SEEPHYS_SCORE_PROMPT = r"""
You are a physics professor, please determine if the Standard answer and Model Answer are equivalent. Note that the significant figures in the answer must meet the requirements. Your judgment should be 0 (non-equivalent) or 1 (equivalent).

[Question]: A force of 20 N acts on an object of mass 5 kg. What is the acceleration of the object?
[Standard Answer]: 4 m/s²
[Model Answer] : 4
Judgement: 1

[Question]: A projectile is launched at an angle $\\theta$ with initial velocity $v_0$. What is its time of flight before returning to the same height, assuming negligible air resistance and gravitational acceleration $g$?
[Standard Answer]: $$ t = \\frac{{2 v_0 \\sin(\\theta)}}{{g}} $$
[Model Answer] : Extracted Answer: $$ t = \\frac{{2 v_0 \\cos(\\frac{\\pi}{2} - \\theta)}}{{g}} $$
Judgement: 1

[Question]: The position of a particle is given by $x(t) = 3t^2 - 2t + 5$ meters. What is its instantaneous velocity at $t=2$ seconds?
[Standard Answer]: 10 m/s
[Model Answer] : Velocity $v(t) = dx/dt = 6t - 2$. At $t=2s$, $v(2) = 6(2) - 2 = 12 - 2 = 10$. So the velocity is 10 m/s.
Judgement: 1

[Question]: A car travels North at 20 m/s. It then turns and travels East at 20 m/s. What is the magnitude of its change in velocity?
[Standard Answer]: Approximately 28.3 m/s
[Model Answer] : The change in velocity is 0 m/s because the speed is the same.
Judgement: 0

[Question]: An object is thrown horizontally from a height of 20m with an initial speed of 10 m/s. Calculate: (a) the time it takes to hit the ground ($t_g$), and (b) the horizontal distance ($d_x$) it travels before hitting the ground. (Use g = 10 m/s²)
[Standard Answer]: (a) $t_g = 2$ s, (b) $d_x = 20$ m
[Model Answer] : (a) The time to hit the ground $t_g$ is 2 s. (b) The horizontal distance $d_x$ is 10 m.
Judgement: 0

[Question]: An engine performs $1.2 \\times 10^5$ J of work in 2 minutes. What is its average power output in watts?
[Standard Answer]: 1 kW
[Model Answer] : Power = Work / Time = $1.2 \\times 10^5$ J / (2 min * 60 s/min) = $1.2 \\times 10^5$ J / 120 s = 1000 W.
Judgement: 1

[Question]: A resistor has a voltage of 10V across it and a current of 2A flowing through it. What is its resistance and power dissipation?
[Standard Answer]: Resistance R = 5 Ohms , Power P = 20 Watts.
[Model Answer] : The resistance is $R = V/I = 10V / 2A = 5 \Omega$. The power dissipated is $P = VI = 10V \\times 2A = 20W$.
Judgement: 1

[Question]: The displacement of an object in Simple Harmonic Motion (SHM) is given by $x(t) = A \sin(\omega t)$. Determine the equation for its acceleration, $a(t)$.
[Standard Answer]: $$ a(t) = -A\omega^2 \sin(\omega t) $$
[Model Answer] : The acceleration is the second derivative of displacement. $v(t) = A\omega \cos(\omega t)$. $a(t) = A\omega^2 \cos\left(\omega t + \\frac{\pi}{2}\\right)$.
Judgement: 1

[Question]: 给出相对论性粒子总能量 $E$ 的速度展开式（到 $v^4/c^4$ 项）。
[Standard Answer]: $E = mc^2 \left(1 + \frac{v^2}{2c^2} + \frac{3v^4}{8c^4} + \mathcal{O}(v^6/c^6)\right)$
[Model Answer]: $E = \gamma m c^2 = \frac{mc^2}{\sqrt{1 - v^2/c^2}} \approx mc^2 + \frac{1}{2}mv^2 + \frac{3}{8} \frac{mv^4}{c^2}$
Judgement: 1

[Question]: 计算粒子能量 $E$ 穿过势垒 $V_0$ ($E < V_0$) 的透射系数 $T$。
[Standard Answer]: $\ln T \approx \ln 16 + \ln\left(\frac{E}{V_0}\right) + \ln\left(1 - \frac{E}{V_0}\right) - \frac{2d}{\hbar} \sqrt{2m(V_0 - E)}$
[Model Answer]: $T \approx 16 \frac{E}{V_0} \left(1 - \frac{E}{V_0}\right) e^{-2d\sqrt{2m(V_0 - E)}/\hbar}$
Judgement: 1

[Question]: The position of a particle is given by $x(t) = (2t^3 - 3t)$ meters. What is its acceleration at $t=1$ second? The final answer should retain 3 significant figures.
[Standard Answer]: 12.0 m/s²
[Model Answer] : $v(t) = 6t^2 - 3$. $a(t) = 12.1t$. At $t=1s$, $a(1) = 12.1 \\text{ m/s}^2$.
Judgement: 0
---
Now please provide your judgement (0 or 1), DONNOT output explanation:
"""  # noqa: E501
